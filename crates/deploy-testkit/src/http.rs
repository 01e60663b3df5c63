//! Raw HTTP/1.x for tests: one exchange as a client (the request exactly as given, status and body back) and, for fake servers, reading a request and writing an answer.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What came back: the status (0 when the status line is not HTTP), the head as
/// sent, and the body (everything after the head).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    fn parse(response: &str) -> Self {
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
        Self {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends `request` (a whole HTTP/1.0 request, or HTTP/1.1 with `Connection: close`)
/// to `addr` and reads the answer to its end, waiting at most `timeout` per read.
pub fn http_exchange(
    addr: &str,
    request: &str,
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(HttpResponse::parse(&response))
}

/// One request as a fake server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query, as in the request line.
    pub path: String,
    /// Lower-case names, trimmed values.
    pub headers: BTreeMap<String, String>,
    /// `content-length` bytes.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The header `name` (lower-case), or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    /// The token of an `Authorization: Bearer` header, or "".
    pub fn bearer(&self) -> &str {
        let value = self.header("authorization");
        value.strip_prefix("Bearer ").unwrap_or(value)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn parse_head(head: &str) -> Self {
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let path = request_line.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Self {
            method,
            path,
            headers,
            body: Vec::new(),
        }
    }
}

/// The first request in `buf` (its head up to the blank line, then `content-length`
/// bytes of body), removed from it; `None` while `buf` holds less than that.
fn take_request(buf: &mut Vec<u8>) -> Option<HttpRequest> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut request = HttpRequest::parse_head(&String::from_utf8_lossy(&buf[..head_end]));
    let length: usize = request.header("content-length").parse().unwrap_or(0);
    let end = head_end + 4 + length;
    if buf.len() < end {
        return None;
    }
    request.body = buf[head_end + 4..end].to_vec();
    buf.drain(..end);
    Some(request)
}

/// Reads the next request from `stream`. `buf` holds what was read past it (the
/// start of the next one on a kept-alive connection): pass the same one each time.
/// `Ok(None)` when the connection ends before a whole request.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<HttpRequest>> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(request) = take_request(buf) {
            return Ok(Some(request));
        }
        match stream.read(&mut chunk).await? {
            0 => return Ok(None),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// [`read_request`] on a blocking stream (a proxy on threads).
pub fn read_request_blocking(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<HttpRequest>> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(request) = take_request(buf) {
            return Ok(Some(request));
        }
        match stream.read(&mut chunk)? {
            0 => return Ok(None),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A whole answer: `status`, `content-type`, `content-length` and `connection: close`.
pub fn http_response(status: u16, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::{HttpResponse, read_request};

    #[tokio::test]
    async fn reads_requests_one_after_the_other() {
        let wire = b"POST /a?x=1 HTTP/1.1\r\nContent-Length: 5\r\nAuthorization: Bearer t0k\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n";
        let mut stream = &wire[..];
        let mut buf = Vec::new();
        let first = read_request(&mut stream, &mut buf).await.unwrap().unwrap();
        assert_eq!(
            (first.method.as_str(), first.path.as_str()),
            ("POST", "/a?x=1")
        );
        assert_eq!((first.bearer(), first.text().as_str()), ("t0k", "hello"));
        let second = read_request(&mut stream, &mut buf).await.unwrap().unwrap();
        assert_eq!((second.method.as_str(), second.body.len()), ("GET", 0));
        assert_eq!(read_request(&mut stream, &mut buf).await.unwrap(), None);
        let mut cut = &b"POST / HTTP/1.1\r\ncontent-length: 9\r\n\r\nshort"[..];
        assert_eq!(read_request(&mut cut, &mut Vec::new()).await.unwrap(), None);
    }

    #[test]
    fn parses_status_head_and_body() {
        let r =
            HttpResponse::parse("HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\n{\"a\": 1}\n");
        assert_eq!(r.status, 404);
        assert_eq!(r.head, "HTTP/1.1 404 Not Found\r\ncontent-length: 9");
        assert_eq!(r.json()["a"], 1);
        let garbage = HttpResponse::parse("garbage");
        assert_eq!((garbage.status, garbage.body.as_str()), (0, ""));
    }
}

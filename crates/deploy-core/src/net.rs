//! Network addresses in target configs: `Host` (DNS name or IP) and `HttpUrl` (an http(s) base URL without credentials).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::errors::ValidationError;

/// A DNS host name (RFC 1123) or an IP address, without port or brackets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Host(String);

impl Host {
    /// Validates a host name or IP address literal.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if value.parse::<IpAddr>().is_ok() || is_dns_name(value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::new(
                "host",
                value.escape_debug(),
                "a DNS name of letters, digits and `-` in dot-separated labels, or an IP address",
            ))
        }
    }

    /// The host as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host in the form a URL authority needs (`[::1]` for IPv6).
    pub fn to_authority(&self) -> String {
        match self.0.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]", self.0),
            _ => self.0.clone(),
        }
    }
}

fn is_dns_name(value: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (1..=253).contains(&value.len()) && value.split('.').all(label_ok)
}

impl TryFrom<String> for Host {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Host> for String {
    fn from(h: Host) -> Self {
        h.0
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `http://` or `https://` URL used as a base for health checks or APIs.
///
/// User info (`user:password@`) is refused: a URL is logged and stored in
/// clear, so it must never carry a secret; credentials go through a
/// `credential_ref` instead.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpUrl(String);

impl HttpUrl {
    /// Validates an absolute http(s) URL.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let invalid = |expected: &str| ValidationError::new("url", value.escape_debug(), expected);
        if value.len() > 2048 {
            return Err(invalid("at most 2048 bytes"));
        }
        if value
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || !c.is_ascii())
        {
            return Err(invalid("printable ASCII without spaces"));
        }
        let rest = value
            .strip_prefix("https://")
            .or_else(|| value.strip_prefix("http://"))
            .ok_or_else(|| invalid("a URL starting with http:// or https://"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(invalid(
                "no user or password in the URL (a target's credentials go in its \
                 credential_ref; a webhook receiver's token in the URL's path or query)",
            ));
        }
        let (host, port) =
            split_authority(authority).ok_or_else(|| invalid("a URL with a host"))?;
        let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => Host::parse(host).is_ok(),
        };
        if !host_ok {
            return Err(invalid("a URL whose host is a DNS name or an IP address"));
        }
        if let Some(port) = port
            && port.parse::<u16>().is_err()
        {
            return Err(invalid("a URL whose port is a number from 0 to 65535"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part (an IPv6 address without its brackets).
    pub fn host(&self) -> &str {
        let rest = self.0.split_once("://").map_or("", |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        split_authority(authority)
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or_default()
    }

    /// True for `https://` URLs.
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// True when the host is this machine ([`is_loopback_host`]): plain http to it
    /// does not leave the host, so a bearer token sent over it is not exposed.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }

    /// This URL with `path` appended, with exactly one `/` between them.
    pub fn join(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.0.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }
}

/// Whether `host` (without brackets) is this machine: `localhost`, 127.0.0.0/8 or
/// `::1`. The one rule deploy-agent and deployctl apply before sending a secret over
/// plain http. Other names are not resolved: a DNS answer is not a promise that the
/// traffic stays local.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Splits `host[:port]` or `[v6][:port]`; `None` when the host is empty.
fn split_authority(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')? + 1;
        let (host, after) = authority.split_at(end);
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

impl TryFrom<String> for HttpUrl {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HttpUrl> for String {
    fn from(u: HttpUrl) -> Self {
        u.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in ["127.0.0.1", "::1", "localhost", "web-1.example.com", "a"] {
            assert!(Host::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a..b",
            "a b",
            "host;id",
            "[::1]",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Host::parse("::1").unwrap().to_authority(), "[::1]");
    }

    #[test]
    fn urls() {
        for ok in [
            "http://127.0.0.1:8080",
            "https://h.example/health?x=1",
            "http://[::1]:80/x",
            "http://localhost/",
        ] {
            assert!(HttpUrl::parse(ok).is_ok(), "{ok}");
        }
        let err = |v: &str| HttpUrl::parse(v).unwrap_err().to_string();
        assert!(err("ftp://x").contains("starting with http://"));
        assert!(err("http://user:pw@host/").contains("no user or password"));
        assert!(err("http://host:99999/").contains("port"));
        assert!(err("http:///x").contains("with a host"));
        assert!(err("http://a b/").contains("without spaces"));
    }

    #[test]
    fn host_is_extracted() {
        assert_eq!(
            HttpUrl::parse("http://127.0.0.1:8080/x").unwrap().host(),
            "127.0.0.1"
        );
        assert_eq!(HttpUrl::parse("https://[::1]:443").unwrap().host(), "::1");
        assert_eq!(
            HttpUrl::parse("http://web.example?q").unwrap().host(),
            "web.example"
        );
    }

    #[test]
    fn only_localhost_127_8_and_v6_one_are_loopback() {
        for local in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:80",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert!(HttpUrl::parse(local).unwrap().is_loopback(), "{local}");
        }
        for remote in [
            "http://10.0.0.1",
            "http://0.0.0.0:8080",
            "http://[::]:80",
            "http://localhost.example",
            "http://128.0.0.1",
            "http://deployd.example:8080",
        ] {
            assert!(!HttpUrl::parse(remote).unwrap().is_loopback(), "{remote}");
        }
    }

    #[test]
    fn join_has_one_slash() {
        let u = HttpUrl::parse("http://h:1/").unwrap();
        assert_eq!(u.join("/health"), "http://h:1/health");
        assert_eq!(
            HttpUrl::parse("http://h:1").unwrap().join("health"),
            "http://h:1/health"
        );
    }
}

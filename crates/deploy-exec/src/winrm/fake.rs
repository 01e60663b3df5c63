//! A fake WS-Management endpoint for tests: a loopback HTTP/1.1 server answering with pywinrm's recorded envelopes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use deploy_testkit::read_request;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

pub const OPEN_SHELL: &str = include_str!("fixtures/open_shell_response.xml");
pub const CLOSE_SHELL: &str = include_str!("fixtures/close_shell_response.xml");
pub const COMMAND: &str = include_str!("fixtures/run_cmd_ps_response.xml");
pub const SIGNAL: &str = include_str!("fixtures/cleanup_cmd_response.xml");
/// stdout (`ipconfig /all`), state Done, exit code 0.
pub const RECEIVE_STDOUT_DONE: &str = include_str!("fixtures/get_cmd_output_response.xml");
/// stderr (a CLIXML error record), state Done, exit code 1.
pub const RECEIVE_STDERR_EXIT_1: &str = include_str!("fixtures/get_ps_output_response.xml");
pub const TIMED_OUT: &str = include_str!("fixtures/timed_out_fault.xml");
pub const SHELL_NOT_FOUND: &str = include_str!("fixtures/shell_not_found_fault.xml");

/// The recorded stdout response turned into an intermediate one: state Running, no exit code.
pub fn running(done: &str) -> String {
    let start = done.find("<rsp:CommandState").unwrap_or(done.len());
    let end = done
        .find("</rsp:CommandState>")
        .map_or(done.len(), |i| i + "</rsp:CommandState>".len());
    let mut s = done.to_owned();
    s.replace_range(
        start..end,
        r#"<rsp:CommandState CommandId="11111111-1111-1111-1111-111111111114" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"/>"#,
    );
    s.replace(r#" End="true""#, "")
}

/// The recorded Receive response with its streams replaced: `stdout`, `stderr`, Done, `exit`.
pub fn done(stdout: &str, stderr: &str, exit: i64) -> String {
    let open = "<rsp:ReceiveResponse>";
    let close = "</rsp:ReceiveResponse>";
    let start = RECEIVE_STDOUT_DONE.find(open).map_or(0, |i| i + open.len());
    let end = RECEIVE_STDOUT_DONE.find(close).unwrap_or(start);
    let id = r#"CommandId="11111111-1111-1111-1111-111111111114""#;
    let mut streams = String::new();
    for (name, data) in [("stdout", stdout), ("stderr", stderr)] {
        if !data.is_empty() {
            streams.push_str(&format!(
                r#"<rsp:Stream {id} Name="{name}">{}</rsp:Stream>"#,
                BASE64.encode(data)
            ));
        }
        streams.push_str(&format!(r#"<rsp:Stream {id} End="true" Name="{name}"/>"#));
    }
    format!(
        r#"{}{streams}<rsp:CommandState {id} State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"><rsp:ExitCode>{exit}</rsp:ExitCode></rsp:CommandState>{}"#,
        &RECEIVE_STDOUT_DONE[..start],
        &RECEIVE_STDOUT_DONE[end..]
    )
}

/// The PowerShell script of a recorded Command request (decoded from -EncodedCommand).
pub fn script_of(body: &str) -> Option<String> {
    let encoded = body.split("<rsp:Arguments>").last()?.split('<').next()?;
    let bytes = BASE64.decode(encoded).ok()?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// One answer of the fake.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn fault(body: impl Into<String>) -> Self {
        Self {
            status: 500,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// What the fake answers to each action.
#[derive(Debug, Clone)]
pub struct Plan {
    pub user: String,
    pub password: String,
    pub create: Reply,
    pub command: Reply,
    /// Served in order; once used up, Receive gets a w:TimedOut fault after 100 ms.
    pub receive: VecDeque<Reply>,
    /// NTLM instead of Basic: pyspnego's acceptor, reading this NTLM_USER_FILE, judges the handshake.
    pub ntlm_user_file: Option<std::path::PathBuf>,
    /// Close each connection after answering one request (clients must reconnect).
    pub one_request_per_connection: bool,
}

impl Plan {
    /// A plan answering as pywinrm's recording does, with `receive` for the Receive calls.
    pub fn new(receive: Vec<Reply>) -> Self {
        Self {
            user: "deploy".to_owned(),
            password: "s3cret-pw".to_owned(),
            create: Reply::ok(OPEN_SHELL),
            command: Reply::ok(COMMAND),
            receive: receive.into(),
            ntlm_user_file: None,
            one_request_per_connection: false,
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The last path segment of the a:Action URI (`Create`, `Command`, ...), or `?`.
    pub action: String,
    pub body: String,
    /// What the fake found wrong with the request (empty when it was well-formed).
    pub problems: Vec<String>,
}

/// A running fake endpoint.
pub struct Fake {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    /// Starts the fake on a free loopback port.
    pub async fn start(plan: Plan) -> Self {
        Self::start_with(plan, None).await
    }

    /// Starts the fake behind TLS with the PEM `cert_chain` and `key`.
    pub async fn start_tls(plan: Plan, cert_chain: &[u8], key: &[u8]) -> Self {
        use tokio_rustls::rustls::ServerConfig;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key).unwrap();
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start_with(plan, Some(acceptor)).await
    }

    async fn start_with(plan: Plan, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(Mutex::new(plan));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tls, plan, seen) = (tls.clone(), plan.clone(), seen2.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, plan, seen).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, plan, seen).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/wsman", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}/wsman", self.addr)
    }

    pub fn actions(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.action.clone())
            .collect()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The checks every WS-Management request must pass, whichever client sent it.
fn check(action: &str, body: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut need = |what: &str, ok: bool| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    need("a:MessageID uuid:", body.contains(":MessageID>uuid:"));
    need("MaxEnvelopeSize", body.contains(":MaxEnvelopeSize"));
    need("OperationTimeout PT", body.contains(":OperationTimeout>PT"));
    need(
        "cmd ResourceURI",
        body.contains("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd<"),
    );
    if action != "Create" {
        need(
            "ShellId selector",
            body.contains(r#"Name="ShellId">11111111-1111-1111-1111-111111111113<"#),
        );
    }
    if action == "Receive" || action == "Signal" {
        need(
            "CommandId",
            body.contains(r#"CommandId="11111111-1111-1111-1111-111111111114""#),
        );
    }
    if action == "Signal" {
        need("terminate code", body.contains("/signal/terminate<"));
    }
    problems
}

/// pyspnego's NTLM acceptor behind a line protocol: base64 token in; base64 token, `OK user` or `ERR why` out.
const ACCEPTOR: &str = "import sys, base64, spnego
s = spnego.server(protocol='ntlm', options=spnego.NegotiateOptions.use_ntlm)
for line in sys.stdin:
    try:
        out = s.step(base64.b64decode(line.strip()))
    except Exception as e:
        print('ERR ' + str(e).replace(chr(10), ' '), flush=True)
        continue
    if s.complete:
        print('OK ' + str(s.client_principal), flush=True)
    else:
        print(base64.b64encode(out).decode(), flush=True)
";

struct Acceptor {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Acceptor {
    fn start(user_file: &std::path::Path) -> Self {
        let mut child = tokio::process::Command::new("python3")
            .arg("-c")
            .arg(ACCEPTOR)
            .env("NTLM_USER_FILE", user_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with pyspnego runs (scripts/peers/winrm.sh installs pywinrm)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        Self {
            _child: child,
            stdin,
            lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)),
        }
    }

    async fn step(&mut self, token: &str) -> String {
        self.stdin
            .write_all(format!("{token}\n").as_bytes())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_default()
    }
}

async fn serve<S>(mut stream: S, plan: Arc<Mutex<Plan>>, seen: Arc<Mutex<Vec<Seen>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let user_file = plan.lock().unwrap().ntlm_user_file.clone();
    let mut acceptor = user_file.as_deref().map(Acceptor::start);
    let mut authenticated = false;
    // One request per round; a client closing the connection ends the loop.
    for _ in 0..1000 {
        let next = read_request(&mut stream, &mut buf);
        let request = match tokio::time::timeout(Duration::from_secs(30), next).await {
            Ok(Ok(Some(request))) => request,
            _ => return,
        };
        let body = request.text();
        let action = body
            .split(":Action")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .and_then(|uri| uri.rsplit('/').next())
            .unwrap_or("?")
            .to_owned();
        let mut challenge = None;
        let token = request.header("authorization").strip_prefix("Negotiate ");
        if let Some(acceptor) = acceptor.as_mut()
            && !authenticated
            && let Some(token) = token
        {
            let answer = acceptor.step(token).await;
            if answer.starts_with("OK ") {
                authenticated = true;
            } else if !answer.starts_with("ERR") {
                challenge = Some(answer);
            }
        }
        let authorized;
        let reply = {
            let mut plan = plan.lock().unwrap();
            let expected = format!(
                "Basic {}",
                BASE64.encode(format!("{}:{}", plan.user, plan.password))
            );
            let allowed = if acceptor.is_some() {
                authenticated
            } else {
                request.header("authorization") == expected
            };
            authorized = allowed;
            if !allowed {
                Reply {
                    status: 401,
                    body: String::new(),
                    delay: Duration::ZERO,
                }
            } else {
                seen.lock().unwrap().push(Seen {
                    action: action.clone(),
                    body: body.clone(),
                    problems: check(&action, &body),
                });
                match action.as_str() {
                    "Create" => plan.create.clone(),
                    "Command" => plan.command.clone(),
                    "Receive" => plan.receive.pop_front().unwrap_or_else(|| {
                        Reply::fault(TIMED_OUT).after(Duration::from_millis(100))
                    }),
                    "Signal" => Reply::ok(SIGNAL),
                    "Delete" => Reply::ok(CLOSE_SHELL),
                    _ => Reply {
                        status: 400,
                        body: String::new(),
                        delay: Duration::ZERO,
                    },
                }
            }
        };
        tokio::time::sleep(reply.delay).await;
        let mut reply = reply;
        if let Some(id) = body
            .split(":MessageID>")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
        {
            reply.body = reply.body.replace(
                "uuid:11111111-1111-1111-1111-111111111111<",
                &format!("{id}<"),
            );
        }
        let reason = match reply.status {
            200 => "OK",
            401 => "Unauthorized",
            500 => "Internal Server Error",
            _ => "Bad Request",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/soap+xml;charset=UTF-8\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        if reply.status == 401 {
            match (&acceptor, &challenge) {
                (Some(_), Some(token)) => {
                    out.push_str(&format!("WWW-Authenticate: Negotiate {token}\r\n"));
                }
                (Some(_), None) => out.push_str("WWW-Authenticate: Negotiate\r\n"),
                (None, _) => out.push_str("WWW-Authenticate: Basic realm=\"WSMAN\"\r\n"),
            }
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        if stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        if authorized && plan.lock().unwrap().one_request_per_connection {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

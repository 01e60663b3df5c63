//! The real `deployctl` following a job against a scripted SSE server on loopback: a character split across TCP writes, `--timeout` (exit 5), and a reader that closes the pipe early.
//!
//! The server is a plain TCP listener answering `GET /api/v1/jobs/<id>/events`
//! with a chunked `text/event-stream` written by each test, so the bytes on the
//! wire and where they are split are exactly what the test says.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deploy_testkit::temp_dir;

use crate::deployd_proc::binaries;

const JOB: &str = "job-1";

/// A loopback server running `respond` on a thread per connection, for the
/// request path `/api/v1/jobs/job-1/events` (anything else gets a 404). Stopped
/// when dropped; a `respond` still writing sees `stopped()` or a closed socket.
struct SseServer {
    addr: String,
    stop: Arc<AtomicBool>,
}

/// What a connection's script may ask: whether the test is over.
#[derive(Clone)]
struct Stop(Arc<AtomicBool>);

impl Stop {
    fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl SseServer {
    fn start(respond: impl Fn(&mut TcpStream, &Stop) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Stop(Arc::clone(&stop));
        let respond = Arc::new(respond);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.stopped() {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let (respond, flag) = (Arc::clone(&respond), flag.clone());
                std::thread::spawn(move || {
                    let head = read_head(&mut stream);
                    let path = format!("GET /api/v1/jobs/{JOB}/events ");
                    if head.starts_with(&path) {
                        respond(&mut stream, &flag);
                    } else {
                        let _ = stream.write_all(
                            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                    }
                });
            }
        });
        Self { addr, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SseServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag and ends.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// The request head, up to its blank line.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The status line and headers of an event stream.
fn stream_head(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
          transfer-encoding: chunked\r\n\r\n",
    )?;
    stream.flush()
}

/// `bytes` as one HTTP chunk, flushed: its own TCP write.
fn chunk(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(format!("{:x}\r\n", bytes.len()).as_bytes())?;
    stream.write_all(bytes)?;
    stream.write_all(b"\r\n")?;
    stream.flush()
}

const END_EVENT: &[u8] = b"id: 99999\nevent: end\ndata: {\"status\":\"completed\"}\n\n";

/// deployctl against `server`, hermetic: no token, no config file but an empty one's folder.
fn deployctl(server: &SseServer, config_home: &Path, args: &[&str]) -> Command {
    let (_, deployctl) = binaries();
    let mut cmd = Command::new(deployctl);
    cmd.args(["--server", &server.url()])
        .args(args)
        .env_remove("DEPLOYCTL_TOKEN")
        .env_remove("DEPLOYCTL_CONFIG")
        .env_remove("DEPLOYCTL_CA_FILE")
        .env("XDG_CONFIG_HOME", config_home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child`, bounded: a follower that never ends is killed and the test fails.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> (ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: deployctl still running after {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a child's pipe to the end on a thread (so a full pipe never blocks the child).
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn cli_stream_a_character_split_across_tcp_writes_arrives_whole() {
    let server = SseServer::start(|stream, _| {
        let event = "id: 1\nevent: transition\n\
                     data: {\"from_status\":\"pending\",\"to_status\":\"running\",\"cause\":\"launch 🚀 now\"}\n\n"
            .as_bytes();
        // Inside the rocket's four bytes: the old per-chunk decoding made it U+FFFD.
        let split = event.iter().position(|&b| b == 0xF0).unwrap() + 2;
        let _ = (|| {
            stream_head(stream)?;
            chunk(stream, &event[..split])?;
            std::thread::sleep(Duration::from_millis(150));
            chunk(stream, &event[split..])?;
            chunk(stream, END_EVENT)?;
            stream.write_all(b"0\r\n\r\n")?;
            stream.flush()
        })();
    });
    let config = temp_dir("cli-stream-").unwrap();
    let mut child = deployctl(
        &server,
        config.path(),
        &["jobs", "watch", JOB, "-o", "json"],
    )
    .spawn()
    .unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let (status, _) = wait_bounded(&mut child, Duration::from_secs(60), "jobs watch");
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("launch 🚀 now"), "stdout: {stdout}");
    assert!(!stdout.contains('\u{FFFD}'), "stdout: {stdout}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "a transition and the end: {stdout}");
    assert_eq!(lines[0]["data"]["cause"], "launch 🚀 now");
    assert_eq!(lines[1]["event"], "end");
}

#[test]
fn cli_stream_timeout_stops_waiting_with_exit_5() {
    // Headers, then only keep-alive comments: the stream is alive, the job never ends.
    let server = SseServer::start(|stream, stop| {
        if stream_head(stream).is_err() {
            return;
        }
        while !stop.stopped() && chunk(stream, b": keep-alive\n\n").is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let config = temp_dir("cli-stream-").unwrap();
    let mut child = deployctl(
        &server,
        config.path(),
        &["--timeout", "2s", "jobs", "watch", JOB],
    )
    .spawn()
    .unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let (status, elapsed) = wait_bounded(&mut child, Duration::from_secs(20), "--timeout 2s");
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert_eq!(status.code(), Some(5), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        elapsed >= Duration::from_secs(2),
        "gave up before --timeout: {elapsed:?}"
    );
    assert!(
        stderr.contains("stopped waiting after 2s") && stderr.contains("the job goes on"),
        "stderr: {stderr}"
    );
}

#[test]
fn cli_stream_a_reader_closing_the_pipe_ends_deployctl_quietly() {
    // Events as long as someone reads them (bounded, should deployctl keep running).
    let server = SseServer::start(|stream, stop| {
        if stream_head(stream).is_err() {
            return;
        }
        for id in 1..=20_000 {
            let event = format!(
                "id: {id}\nevent: transition\n\
                 data: {{\"task_id\":\"t{id}\",\"from_status\":\"pending\",\"to_status\":\"running\",\"cause\":\"dispatch\"}}\n\n"
            );
            if stop.stopped() || chunk(stream, event.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = chunk(stream, END_EVENT);
        let _ = stream.write_all(b"0\r\n\r\n");
    });
    let config = temp_dir("cli-stream-").unwrap();
    let mut child = deployctl(&server, config.path(), &["jobs", "watch", JOB])
        .spawn()
        .unwrap();
    let stderr = drain(child.stderr.take().unwrap());
    // Like `| head -1`: one line, then the read end is closed.
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    drop(reader);
    assert!(first.contains("task t1: pending -> running"), "{first}");
    let (status, _) = wait_bounded(&mut child, Duration::from_secs(60), "closed pipe");
    let stderr = stderr.join().unwrap();
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "", "a closed pipe ends deployctl quietly");
}

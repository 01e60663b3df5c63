//! A real headless Chromium driven over WebDriver (chromedriver + fantoccini) for the web console's scenarios, and raw form POSTs with a session cookie.
//!
//! [`Browser::start`] runs `chromedriver --port=<free port>` as a child process
//! (killed on drop), waits until its `/status` says ready, and opens one session of
//! headless Chromium at 1280x900. The methods are blocking (the browser owns its
//! own tokio runtime), like the other real-process helpers (`deployd_proc`), and
//! they panic with the page's URL and a screenshot name when something is not
//! there in time: every wait polls against a deadline, none sleeps a fixed time.
//!
//! Screenshots go to `<target dir>/console-screenshots/<name>.png` (so
//! `target/console-screenshots/` from the workspace root); each path is printed.
//!
//! [`post_form`] and [`get_page`] speak plain HTTP/1.0 to deployd (no
//! redirects followed, no chunked bodies), for what a browser would not send: a
//! forged POST, a form without its CSRF field.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploy_testkit::{HttpResponse, free_port, http_exchange, require_program, temp_dir};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);

/// One headless Chromium session; chromedriver is killed when it is dropped.
pub(crate) struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    driver_log: PathBuf,
    /// `http://ip:port` of the server under test; paths given to [`Browser::goto`] are relative to it.
    base: String,
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session at 1280x900, for pages of `base`.
    pub(crate) fn start(base: &str) -> Self {
        let hint = "`apt-get install chromium chromium-driver` (scripts/peers/browser.sh does)";
        let chromedriver =
            require_program("chromedriver", &["/usr/bin"], hint).unwrap_or_else(|e| panic!("{e}"));
        let chromium =
            require_program("chromium", &["/usr/bin"], hint).unwrap_or_else(|e| panic!("{e}"));
        let dir = temp_dir("browser-").unwrap();
        let driver_log = dir.path().join("chromedriver.log");
        let port = free_port().unwrap();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", driver_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", chromedriver.display()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut browser = Self {
            runtime,
            client: None,
            driver,
            driver_log,
            base: base.trim_end_matches('/').to_owned(),
            _dir: dir,
        };
        browser.wait_until_driver_ready(port);

        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        // An alert left open fails the next command instead of being dismissed silently.
        capabilities.insert("unhandledPromptBehavior".to_owned(), json!("ignore"));
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                ],
            }),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let connected = browser.runtime.block_on(
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&webdriver),
        );
        match connected {
            Ok(client) => browser.client = Some(client),
            Err(e) => panic!(
                "no Chromium session from chromedriver on {webdriver}: {e}\n{}",
                browser.driver_log()
            ),
        }
        browser.set_window_size(1280, 900);
        browser
    }

    /// Polls chromedriver's `/status` until it answers `ready: true` (bounded, 30 s).
    fn wait_until_driver_ready(&mut self, port: u16) {
        let addr = format!("127.0.0.1:{port}");
        let url = format!("http://{addr}/status");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // chromedriver keeps every connection open (and answers HTTP/1.0 with
            // nothing), so a client that reads by Content-Length: reqwest.
            let ready = self.runtime.block_on(async {
                let response = http.get(&url).send().await.ok()?;
                response.json::<Value>().await.ok()
            });
            if ready.is_some_and(|status| status["value"]["ready"] == true) {
                return;
            }
            if let Some(status) = self.driver.try_wait().unwrap() {
                panic!(
                    "chromedriver exited with {status} before it was ready\n{}",
                    self.driver_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver on {addr} not ready within 30 s\n{}",
                self.driver_log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The end of chromedriver's log, for failure messages.
    fn driver_log(&self) -> String {
        let log = std::fs::read_to_string(&self.driver_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("chromedriver log (last lines):\n{}", tail.join("\n"))
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Runs one WebDriver future to its end.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The absolute URL of `path` (`/ui/jobs`) on the server under test; an absolute URL stays as it is.
    pub(crate) fn url_of(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Opens `path` (relative to the server under test) and waits for the load.
    pub(crate) fn goto(&self, path: &str) {
        let url = self.url_of(path);
        self.block_on(self.client().goto(&url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The current URL.
    pub(crate) fn current_url(&self) -> String {
        self.block_on(self.client().current_url())
            .unwrap()
            .to_string()
    }

    /// The current URL's path (`/ui/jobs/…`).
    pub(crate) fn current_path(&self) -> String {
        self.block_on(self.client().current_url())
            .unwrap()
            .path()
            .to_owned()
    }

    /// The first element matching `css`, now; panics naming the page when there is none.
    pub(crate) fn find(&self, css: &str) -> Element {
        match self.block_on(self.client().find(Locator::Css(css))) {
            Ok(element) => element,
            Err(e) => {
                let shot = self.screenshot("failure-find");
                panic!(
                    "no `{css}` on {}: {e} (screenshot {})",
                    self.current_url(),
                    shot.display()
                )
            }
        }
    }

    /// How many elements match `css` now.
    pub(crate) fn count(&self, css: &str) -> usize {
        self.block_on(self.client().find_all(Locator::Css(css)))
            .unwrap_or_else(|e| panic!("find_all `{css}` on {}: {e}", self.current_url()))
            .len()
    }

    /// Runs `act` on the first element matching `css`, finding it again when a live
    /// swap replaced it in between (a stale element), a few times at most.
    fn on_element<T, F, Fut>(&self, css: &str, what: &str, act: F) -> T
    where
        F: Fn(Element) -> Fut,
        Fut: Future<Output = Result<T, fantoccini::error::CmdError>>,
    {
        let mut tries = 0;
        loop {
            match self.block_on(act(self.find(css))) {
                Ok(value) => return value,
                Err(e) if e.is_stale_element_reference() && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(POLL);
                }
                Err(e) => panic!("{what} `{css}` on {}: {e}", self.current_url()),
            }
        }
    }

    /// The text of the first element matching `css` (as rendered, trimmed).
    pub(crate) fn text(&self, css: &str) -> String {
        self.on_element(css, "text of", |e| async move { e.text().await })
            .trim()
            .to_owned()
    }

    /// The texts of every element matching `css`, trimmed, in document order; an error
    /// when the page changed under the reads (a live swap).
    fn try_texts(&self, css: &str) -> Result<Vec<String>, fantoccini::error::CmdError> {
        self.block_on(async {
            let mut texts = Vec::new();
            for element in self.client().find_all(Locator::Css(css)).await? {
                texts.push(element.text().await?.trim().to_owned());
            }
            Ok(texts)
        })
    }

    /// Attribute `name` of the first element matching `css`.
    pub(crate) fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.on_element(css, &format!("attribute `{name}` of"), |e| async move {
            e.attr(name).await
        })
    }

    /// Clicks the first element matching `css`.
    pub(crate) fn click(&self, css: &str) {
        self.on_element(css, "click", |e| async move { e.click().await });
    }

    /// Types `text` into the first element matching `css`.
    pub(crate) fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "type into", |e| async move { e.send_keys(text).await });
    }

    /// Runs `script` in the page (`return …` gives a value).
    pub(crate) fn execute(&self, script: &str) -> Value {
        self.block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("execute {script:?} on {}: {e}", self.current_url()))
    }

    /// Waits (polling until `timeout`) until the first element matching `css` has the
    /// text `expected` (trimmed); returns the distinct texts seen on the way, in order
    /// (the element may be missing or replaced meanwhile: a live page swaps it).
    pub(crate) fn wait_for_text(
        &self,
        css: &str,
        expected: &str,
        timeout: Duration,
    ) -> Vec<String> {
        self.wait_for_texts(css, timeout, &format!("text {expected:?}"), |texts| {
            texts.first().is_some_and(|t| t == expected)
        })
    }

    /// Waits until the first element matching `css` contains `needle`; its text then.
    pub(crate) fn wait_for_text_containing(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> String {
        self.wait_for_texts(css, timeout, &format!("a text with {needle:?}"), |texts| {
            texts.first().is_some_and(|t| t.contains(needle))
        });
        self.text(css)
    }

    /// Waits until the texts of every element matching `css` satisfy `done`; returns
    /// the distinct joined texts seen, in order. Panics with the last ones, the URL and a
    /// screenshot when `timeout` passes.
    pub(crate) fn wait_for_texts(
        &self,
        css: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<String> = Vec::new();
        loop {
            // A read that raced a live swap (stale element) is just not a match yet.
            if let Ok(texts) = self.try_texts(css) {
                let joined = texts.join(" | ");
                if seen.last() != Some(&joined) {
                    seen.push(joined);
                }
                if done(&texts) {
                    return seen;
                }
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("failure-wait");
                panic!(
                    "`{css}` on {} never had {what} within {timeout:?}; seen: {seen:?} (screenshot {})",
                    self.current_url(),
                    shot.display()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the current path is `path` (a navigation after a form post).
    pub(crate) fn wait_for_path(&self, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.current_path();
            if now == path {
                return;
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("failure-path");
                panic!(
                    "the browser is on {now}, not {path}, after {timeout:?} (screenshot {})",
                    shot.display()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Accepts the `window.confirm` (or alert) a click opened, waiting for it (bounded);
    /// returns its question.
    pub(crate) fn accept_confirm(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.block_on(self.client().get_alert_text()) {
                Ok(text) => {
                    self.block_on(self.client().accept_alert())
                        .unwrap_or_else(|e| panic!("accept the confirm {text:?}: {e}"));
                    return text;
                }
                Err(e) if e.is_no_such_alert() && Instant::now() < deadline => {
                    std::thread::sleep(POLL);
                }
                Err(e) => panic!(
                    "no confirm dialog on {} within 10 s: {e}",
                    self.current_url()
                ),
            }
        }
    }

    /// Accepts a `window.confirm` if one is open now; its question.
    pub(crate) fn accept_confirm_if_any(&self) -> Option<String> {
        let text = self.block_on(self.client().get_alert_text()).ok()?;
        self.block_on(self.client().accept_alert())
            .unwrap_or_else(|e| panic!("accept the confirm {text:?}: {e}"));
        Some(text)
    }

    /// Resizes the window (the viewport follows).
    pub(crate) fn set_window_size(&self, width: u32, height: u32) {
        self.block_on(self.client().set_window_size(width, height))
            .unwrap_or_else(|e| panic!("set the window to {width}x{height}: {e}"));
    }

    /// The value of cookie `name` as the browser holds it (HttpOnly ones too).
    pub(crate) fn cookie(&self, name: &str) -> String {
        self.block_on(self.client().get_named_cookie(name))
            .unwrap_or_else(|e| panic!("no cookie `{name}` on {}: {e}", self.current_url()))
            .value()
            .to_owned()
    }

    /// Saves a PNG of the window as `<target dir>/console-screenshots/<name>.png`, prints and returns its path.
    pub(crate) fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        match self.block_on(self.client().screenshot()) {
            Ok(png) => {
                std::fs::write(&path, png).unwrap();
                eprintln!("screenshot {name}: {}", path.display());
            }
            // A failure report must not turn into a second panic over its screenshot.
            Err(e) => eprintln!("screenshot {name} not taken: {e}"),
        }
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // The timer is made inside the runtime (an async block), not before it.
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `<target dir>/console-screenshots`: the target dir is the one this test binary
/// was built in (`target/debug/deps/…` → `target`), so `CARGO_TARGET_DIR` is followed.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map_or_else(|| Path::new("target").to_path_buf(), Path::to_path_buf);
    target.join("console-screenshots")
}

/// `application/x-www-form-urlencoded` of `fields`.
fn form_body(fields: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `POST path` on deployd at `addr` with `fields` as a form, the session cookie
/// `deployd_session=<session>` when given, and deployd's own `Origin` (so only the
/// session, its role and the CSRF field decide): the answer as it came (no redirect followed).
pub(crate) fn post_form(
    addr: &str,
    path: &str,
    session: Option<&str>,
    fields: &[(&str, &str)],
) -> HttpResponse {
    let body = form_body(fields);
    let cookie = session
        .map(|s| format!("Cookie: deployd_session={s}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n{cookie}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_exchange(addr, &request, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("POST http://{addr}{path}: {e}"))
}

/// `GET path` on deployd at `addr`, with the session cookie when given: the answer as it came.
pub(crate) fn get_page(addr: &str, path: &str, session: Option<&str>) -> HttpResponse {
    let cookie = session
        .map(|s| format!("Cookie: deployd_session={s}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{cookie}\r\n");
    http_exchange(addr, &request, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// The value of the `deployd_session` cookie a response sets, if any.
pub(crate) fn session_cookie(response: &HttpResponse) -> Option<String> {
    response.head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let pair = value.trim().split(';').next()?;
        pair.strip_prefix("deployd_session=").map(str::to_owned)
    })
}

/// A response header's value (the first one named `name`).
pub(crate) fn header(response: &HttpResponse, name: &str) -> Option<String> {
    response.head.lines().find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// The CSRF token a signed-in page carries: the `value` of its `<input name="csrf">`.
pub(crate) fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\"")?;
    // The input's own tag: from its `<` to its `>`.
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let value = tag.split("value=\"").nth(1)?;
    value.split('"').next().map(str::to_owned)
}

#[test]
fn form_bodies_and_csrf_fields_are_read_like_a_browser_would() {
    assert_eq!(
        form_body(&[("csrf", "a b+c/="), ("reason", "é")]),
        "csrf=a+b%2Bc%2F%3D&reason=%C3%A9"
    );
    let html =
        r#"<form><input type="hidden" value="t0k" name="csrf"><input name="x" value="y"></form>"#;
    assert_eq!(csrf_of(html).as_deref(), Some("t0k"));
    assert_eq!(csrf_of("<p>no form</p>"), None);
    let response = HttpResponse {
        status: 303,
        head: "HTTP/1.1 303 See Other\r\nlocation: /ui/\r\nSet-Cookie: deployd_session=abc; HttpOnly; Path=/ui".to_owned(),
        body: String::new(),
    };
    assert_eq!(session_cookie(&response).as_deref(), Some("abc"));
    assert_eq!(header(&response, "Location").as_deref(), Some("/ui/"));
}

/// The harness itself, on a page of its own (no deployd): a text read, a confirm
/// accepted, a change waited for without a reload, a screenshot, a resize.
#[test]
fn the_browser_harness_drives_chromium() {
    use std::io::Write as _;

    const PAGE: &str = "<!doctype html><html><head><title>harness</title></head><body>\
        <p id=\"status\">pending</p><button id=\"go\">go</button><script>\
        document.getElementById('go').addEventListener('click', () => {\
          if (confirm('sure?')) { setTimeout(() => {\
            document.getElementById('status').textContent = 'done'; }, 300); }\
        });</script></body></html>";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                while let Ok(Some(_)) = deploy_testkit::read_request_blocking(&mut stream, &mut buf)
                {
                    let answer = deploy_testkit::http_response(200, "text/html", PAGE);
                    if stream.write_all(answer.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });

    let browser = Browser::start(&format!("http://{addr}"));
    browser.goto("/");
    assert_eq!(browser.text("#status"), "pending");
    assert_eq!(browser.execute("window.__marker = 1; return 1;"), json!(1));
    browser.click("#go");
    assert_eq!(browser.accept_confirm(), "sure?");
    let seen = browser.wait_for_text("#status", "done", Duration::from_secs(10));
    assert_eq!(seen, ["pending", "done"]);
    assert_eq!(
        browser.execute("return window.__marker === 1;"),
        json!(true)
    );
    let shot = browser.screenshot("harness-self-test");
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
    browser.set_window_size(390, 844);
    assert_eq!(browser.execute("return window.innerWidth;"), json!(390));
}

//! Tests of the WinRM client and executor against the fake endpoint, and of the fake against the real pywinrm client.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use deploy_core::testing::{digest, name, ssh_target, task};
use deploy_core::{
    CommandSpec, Connection, ContainerSpec, CredentialRef, HttpUrl, ImageRef, PortMapping,
    Protocol, Target, TargetType, WinrmAuth, WinrmConnection,
};
use tokio::time::Instant;

use super::client::{WinrmClient, WinrmClientConfig};
use super::envelope::{self, Header, Request};
use super::executor::WinrmExecutor;
use super::fake::{self, Fake, Plan, Reply};
use crate::errors::{ErrorClass, ExecError};
use crate::executor::{ComponentSpec, DeployRequest, ExecContext, Executor};
use crate::logs::MemorySink;
use crate::secrets::Secret;
use crate::testing::FakeSecrets;

fn conn(url: &str, insecure: bool) -> WinrmConnection {
    WinrmConnection {
        endpoint: HttpUrl::parse(url).unwrap(),
        auth: WinrmAuth::Basic,
        credential_ref: CredentialRef::parse("env:WINRM_CRED").unwrap(),
        ca_ref: None,
        allow_insecure_http: insecure,
    }
}

fn target(url: &str) -> Target {
    let mut t = ssh_target(1);
    t.connection = Connection::Winrm(conn(url, true));
    t
}

fn config() -> WinrmClientConfig {
    WinrmClientConfig {
        operation_timeout: Duration::from_secs(1),
        max_envelope_size: 153_600,
        connect_timeout: Duration::from_secs(2),
    }
}

fn client(fake: &Fake, password: &str) -> WinrmClient {
    WinrmClient::new(
        &conn(&fake.url(), true),
        "deploy",
        Secret::new(password),
        None,
        config(),
    )
    .unwrap()
}

fn executor(password: &str) -> WinrmExecutor {
    WinrmExecutor::new(
        config(),
        Arc::new(FakeSecrets::new([(
            "env:WINRM_CRED",
            format!("deploy:{password}"),
        )])),
    )
}

fn cmd(argv: &[&str]) -> CommandSpec {
    CommandSpec::new(argv.iter().map(|s| (*s).to_owned()).collect()).unwrap()
}

/// `argv` run through the executor as user `deploy` with `password`.
async fn run_on(
    target: &Target,
    password: &str,
    argv: &[&str],
    ctx: &ExecContext,
) -> Result<crate::executor::CommandOutput, ExecError> {
    executor(password)
        .run_command(target, &cmd(argv), ctx)
        .await
}

fn assert_requests_well_formed(fake: &Fake) {
    for s in fake.seen() {
        assert!(
            s.problems.is_empty(),
            "{} request lacks {:?}:\n{}",
            s.action,
            s.problems,
            s.body
        );
    }
}

#[test]
fn recorded_envelopes_parse() {
    let open = envelope::parse(fake::OPEN_SHELL.as_bytes()).unwrap();
    assert_eq!(
        open.shell_id.as_deref(),
        Some("11111111-1111-1111-1111-111111111113")
    );
    let command = envelope::parse(fake::COMMAND.as_bytes()).unwrap();
    assert_eq!(
        command.command_id.as_deref(),
        Some("11111111-1111-1111-1111-111111111114")
    );
    let out = envelope::parse(fake::RECEIVE_STDOUT_DONE.as_bytes()).unwrap();
    assert!(out.done());
    assert_eq!(out.exit_code, Some(0));
    assert!(String::from_utf8_lossy(&out.streams[0].data).contains("Windows IP Configuration"));
    let err = envelope::parse(fake::RECEIVE_STDERR_EXIT_1.as_bytes()).unwrap();
    assert_eq!(err.exit_code, Some(1));
    assert!(err.streams.iter().all(|s| s.name == "stderr"));
    let running = envelope::parse(fake::running(fake::RECEIVE_STDOUT_DONE).as_bytes()).unwrap();
    assert!(!running.done());
    assert_eq!(running.exit_code, None);
    let timed_out = envelope::parse(fake::TIMED_OUT.as_bytes()).unwrap();
    assert!(timed_out.fault.unwrap().is_operation_timeout());
    let fault = envelope::parse(fake::SHELL_NOT_FOUND.as_bytes())
        .unwrap()
        .fault
        .unwrap();
    assert!(!fault.is_operation_timeout());
    assert_eq!(fault.codes, ["s:Sender", "w:InvalidSelectors"]);
    assert_eq!(fault.wsman_code.as_deref(), Some("2150858843"));
}

#[test]
fn malformed_envelopes_are_errors_not_panics() {
    for (input, expected) in [
        ("", "found no element"),
        ("<s:Envelope><s:Body>", "ends before"),
        (
            "<s:Envelope><s:Body></s:Wrong></s:Envelope>",
            "malformed xml",
        ),
        (
            "<html><body>hi</body></html>",
            "expected a soap Envelope, found <html>",
        ),
        ("<s:Envelope><s:Header/></s:Envelope>", "no Body"),
        ("not xml at all", "text outside the envelope"),
        (
            "<s:Envelope><s:Body><rsp:Stream Name=\"stdout\">@@@</rsp:Stream></s:Body></s:Envelope>",
            "not base64",
        ),
        (
            "<s:Envelope><s:Body><rsp:ExitCode>x</rsp:ExitCode></s:Body></s:Envelope>",
            "not an integer",
        ),
    ] {
        let err = envelope::parse(input.as_bytes()).unwrap_err();
        assert!(err.contains(expected), "{input:?}: {err}");
    }
    assert!(
        envelope::parse(&[0xff, 0xfe, 0x00])
            .unwrap_err()
            .contains("UTF-8")
    );
}

#[test]
fn built_envelopes_match_the_recorded_request_and_escape_values() {
    let body = envelope::build(
        &Header {
            to: "http://windows-host:5985/wsman",
            message_id: "uuid:11111111-1111-1111-1111-111111111111",
            max_envelope_size: 153_600,
            operation_timeout: Duration::from_secs(20),
            shell_id: None,
        },
        &Request::Create,
    );
    let body = String::from_utf8(body).unwrap();
    for needle in [
        "<a:Action s:mustUnderstand=\"true\">http://schemas.xmlsoap.org/ws/2004/09/transfer/Create</a:Action>",
        "<w:MaxEnvelopeSize s:mustUnderstand=\"true\">153600</w:MaxEnvelopeSize>",
        "<w:OperationTimeout>PT20.000S</w:OperationTimeout>",
        "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams>",
    ] {
        assert!(body.contains(needle), "{needle} not in {body}");
    }
    let args = ["a<b & \"c\"".to_owned()];
    let body = envelope::build(
        &Header {
            to: "http://h/wsman",
            message_id: "uuid:1",
            max_envelope_size: 1000,
            operation_timeout: Duration::from_millis(1500),
            shell_id: Some("S"),
        },
        &Request::Command {
            command: "cmd",
            arguments: &args,
        },
    );
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains("<rsp:Arguments>a&lt;b &amp; &quot;c&quot;</rsp:Arguments>"),
        "{body}"
    );
    assert!(body.contains("PT1.500S"), "{body}");
    assert!(
        body.contains("<w:Selector Name=\"ShellId\">S</w:Selector>"),
        "{body}"
    );
}

#[tokio::test]
async fn stdout_stderr_and_exit_code_over_several_receives() {
    let fake = Fake::start(Plan::new(vec![
        Reply::fault(fake::TIMED_OUT),
        Reply::ok(fake::running(fake::RECEIVE_STDOUT_DONE)),
        Reply::ok(fake::RECEIVE_STDERR_EXIT_1),
    ]))
    .await;
    let sink = Arc::new(MemorySink::new());
    let ctx = ExecContext::new(sink.clone(), Duration::from_secs(20));
    let out = client(&fake, "s3cret-pw")
        .run(
            "powershell",
            &[],
            "test",
            &ctx.log,
            &ctx.cancel,
            Instant::now() + ctx.timeout,
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Windows IP Configuration"));
    assert!(String::from_utf8_lossy(&out.stderr_tail).contains("CLIXML"));
    let lines = sink.lines();
    assert!(
        lines.iter().any(|l| l.contains("Windows IP Configuration")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("#< CLIXML")), "{lines:?}");
    assert_eq!(
        fake.actions(),
        [
            "Create", "Command", "Receive", "Receive", "Receive", "Delete"
        ]
    );
    assert_requests_well_formed(&fake);
}

#[tokio::test]
async fn executor_runs_commands_as_encoded_powershell() {
    let fake = Fake::start(Plan::new(vec![Reply::ok(fake::RECEIVE_STDOUT_DONE)])).await;
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let out = executor("s3cret-pw")
        .run_command(
            &target(&fake.url()),
            &cmd(&["docker", "ps", "it's $x"]),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(out.exit_status, 0);
    assert!(out.stdout.contains("Windows IP Configuration"));
    let seen = fake.seen();
    let command = &seen[1].body;
    let script = super::powershell::call_script(&["docker".into(), "ps".into(), "it's $x".into()]);
    let encoded = super::powershell::encoded_command(&script);
    assert!(
        command.contains("<rsp:Command>powershell</rsp:Command>"),
        "{command}"
    );
    assert!(
        command.contains("<rsp:Arguments>-EncodedCommand</rsp:Arguments>"),
        "{command}"
    );
    assert!(command.contains(&encoded), "{command}");
    assert!(!command.contains("s3cret-pw"));
    assert_requests_well_formed(&fake);
}

#[tokio::test]
async fn cancel_terminates_the_command_and_deletes_the_shell() {
    // No output ever: every Receive times out on the server side.
    let fake = Fake::start(Plan::new(vec![])).await;
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(350)).await;
        cancel.cancel();
    });
    let err = executor("s3cret-pw")
        .run_command(
            &target(&fake.url()),
            &cmd(&["ping", "-t", "localhost"]),
            &ctx,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Cancelled { .. }), "{err}");
    let actions = fake.actions();
    assert!(
        actions.iter().filter(|a| *a == "Receive").count() >= 2,
        "{actions:?}"
    );
    assert_eq!(
        actions[actions.len() - 2..],
        ["Signal", "Delete"],
        "{actions:?}"
    );
    assert_requests_well_formed(&fake);
}

#[tokio::test]
async fn timeout_terminates_the_command_and_is_retryable() {
    let fake = Fake::start(Plan::new(vec![])).await;
    let ctx = ExecContext::quiet(Duration::from_millis(300));
    let err = run_on(&target(&fake.url()), "s3cret-pw", &["ping"], &ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(fake.actions().contains(&"Signal".to_owned()));
}

#[tokio::test]
async fn wrong_password_is_a_permanent_authentication_error() {
    let fake = Fake::start(Plan::new(vec![])).await;
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let err = run_on(&target(&fake.url()), "wrong-password", &["hostname"], &ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Authentication { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(!err.to_string().contains("wrong-password"), "{err}");
    assert!(err.to_string().contains("`deploy`"), "{err}");
}

#[tokio::test]
async fn soap_fault_is_reported_with_its_code_and_message() {
    let mut plan = Plan::new(vec![]);
    plan.command = Reply::fault(fake::SHELL_NOT_FOUND);
    let fake = Fake::start(plan).await;
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let err = run_on(&target(&fake.url()), "s3cret-pw", &["hostname"], &ctx)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ExecError::SoapFault { .. }), "{text}");
    assert!(
        text.starts_with(&format!("start command on {}", fake.url())),
        "{text}"
    );
    assert!(
        text.contains("w:InvalidSelectors (wsman code 2150858843)"),
        "{text}"
    );
    assert!(text.contains("the shell was not found"), "{text}");
    assert!(!err.is_retryable());
    assert_eq!(fake.actions(), ["Create", "Command", "Delete"]);
}

#[tokio::test]
async fn malformed_and_oversized_responses_are_clear_errors() {
    let fake = Fake::start(Plan::new(vec![Reply::ok(
        "<s:Envelope><s:Body><rsp:Stream>",
    )]))
    .await;
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let err = run_on(&target(&fake.url()), "s3cret-pw", &["hostname"], &ctx)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ExecError::Protocol { .. }), "{text}");
    assert!(
        text.contains("receive output on http://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("expected a soap envelope"), "{text}");

    let big = format!(
        "{}<!--{}-->",
        fake::RECEIVE_STDOUT_DONE,
        "x".repeat(200_000)
    );
    let fake = Fake::start(Plan::new(vec![Reply::ok(big)])).await;
    let err = run_on(&target(&fake.url()), "s3cret-pw", &["hostname"], &ctx)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("expected a response of at most 153600 bytes (MaxEnvelopeSize)"),
        "{text}"
    );
    assert!(!err.is_retryable());
}

#[test]
fn plain_http_needs_the_opt_in_and_a_ca_must_be_pem() {
    let err = WinrmClient::new(
        &conn("http://127.0.0.1:5985/wsman", false),
        "u",
        Secret::new("p"),
        None,
        config(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("allow_insecure_http"), "{err}");
    assert!(!err.is_retryable());
    let bad_ca = WinrmClient::new(
        &conn("https://127.0.0.1:5986/wsman", false),
        "u",
        Secret::new("p"),
        Some("not a pem"),
        config(),
    );
    assert!(bad_ca.is_err());
}

/// The fake checked by an implementation nobody here wrote: pywinrm runs a command against it.
#[tokio::test]
async fn real_pywinrm_client_drives_the_fake() {
    let fake = Fake::start(Plan::new(vec![Reply::ok(fake::RECEIVE_STDOUT_DONE)])).await;
    let script = format!(
        "import winrm\n\
         s = winrm.Session({url:?}, auth=('deploy', 's3cret-pw'), transport='basic', \
         operation_timeout_sec=5, read_timeout_sec=10)\n\
         r = s.run_cmd('ipconfig', ['/all'])\n\
         print(r.status_code)\n\
         print(r.std_out.decode())\n",
        url = fake.url()
    );
    let run = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("pywinrm finished within 60 s")
        .expect("python3 runs (install it and pywinrm with scripts/peers/winrm.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pywinrm failed against the fake (is pywinrm installed? scripts/peers/winrm.sh): {stderr}"
    );
    assert!(stdout.starts_with("0\n"), "{stdout}");
    assert!(stdout.contains("Windows IP Configuration"), "{stdout}");
    assert_eq!(
        fake.actions(),
        ["Create", "Command", "Receive", "Signal", "Delete"]
    );
    assert_requests_well_formed(&fake);
}

fn deploy_request(url: &str) -> DeployRequest {
    DeployRequest {
        target: target(url),
        task: task(1, 3),
        component: Some(ComponentSpec {
            name: name("web"),
            container: ContainerSpec {
                command: Some(vec!["--greeting=it's $HOME".to_owned()]),
                env: [("GREETING".to_owned(), "value # \"quoted\" 日本".to_owned())].into(),
                ports: vec![PortMapping {
                    host_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
                    host_port: None,
                    container_port: 8080,
                    protocol: Protocol::Tcp,
                }],
                ..ContainerSpec::from_image(
                    ImageRef::from_parts("127.0.0.1:5000/app", &digest(2)).unwrap(),
                )
            },
            keep_previous_running: false,
        }),
        project: name("p"),
        artifacts: vec![],
        stored_lock: None,
        rollback: false,
    }
}

/// `docker inspect`'s output for one container (what the CLI prints, the Engine API's shape).
fn inspect_json(id: &str, running: bool, digest: &deploy_core::Digest, config: &str) -> String {
    serde_json::json!([{
        "Id": id,
        "State": {
            "Running": running,
            "Restarting": false,
            "Status": if running { "running" } else { "exited" },
            "ExitCode": if running { 0 } else { 1 },
        },
        "RestartCount": 0,
        "Config": {"Labels": {
            "stella.digest": digest.as_str(),
            "stella.config": config,
            "stella.target": "host-1",
        }},
        "NetworkSettings": {"Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}},
    }])
    .to_string()
}

/// The answer of a step: `stdout`, exit `code`.
fn step(stdout: &str, code: i64) -> Reply {
    Reply::ok(fake::done(stdout, "", code))
}

fn quick_executor() -> WinrmExecutor {
    let mut e = executor("s3cret-pw");
    e.settle = Duration::from_millis(10);
    e
}

fn scripts(fake: &Fake) -> Vec<String> {
    fake.seen()
        .iter()
        .filter(|s| s.action == "Command")
        .filter_map(|s| fake::script_of(&s.body))
        .collect()
}

#[tokio::test]
async fn docker_host_deploy_runs_the_shared_sequence_as_cli_commands() {
    let request = deploy_request("http://unused");
    let component = request.component.clone().unwrap();
    let spec = &component.container;
    let (new, config) = (digest(2), deploy_docker::config_digest(spec));
    let next = inspect_json("n1", true, &new, &config);
    let fake = Fake::start(Plan::new(vec![
        step("", 3),                     // inspect web: none
        step("", 3),                     // inspect web-previous: none
        step("", 1),                     // image inspect: absent
        step("pulled\n", 0),             // pull
        step("", 0),                     // rm -f web-next
        step("C:\\Temp\\tmp1.tmp\n", 0), // temp file for the env-file
        step("", 0),                     // env-file piece
        step("", 0),                     // create
        step("", 0),                     // start web-next
        step(&next, 0),                  // inspect web-next
        step(&next, 0),                  // inspect web-next after the settle
        step("", 3),                     // swap: inspect web: none
        step("", 0),                     // rename web-next web
        step(&next, 0),                  // inspect web: the new one
    ]))
    .await;
    let mut request = request;
    request.target = target(&fake.url());
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let result = quick_executor().deploy(&request, &ctx).await;
    let result = result.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(result.changed);
    assert_eq!(result.deployed_digest, new.clone());
    assert_eq!(result.previous_digest, None);
    assert_eq!(result.running.get("web"), Some(&new));
    assert_eq!(result.published.first().map(|p| p.host_port), Some(49153));
    let scripts = scripts(&fake);
    assert_eq!(scripts.len(), 14, "{scripts:#?}");
    let has = |i: usize, part: &str| {
        assert!(
            scripts[i].contains(part),
            "script {i} lacks {part}:\n{}",
            scripts[i]
        );
    };
    has(0, "& docker 'inspect' '--type' 'container' 'web'");
    has(1, "'web-previous'");
    has(3, &format!("& docker 'pull' '127.0.0.1:5000/app@{new}'"));
    // The environment is written from base64 bytes, never on the command line.
    let env_b64 = base64::engine::general_purpose::STANDARD.encode(deploy_docker::env_file(spec));
    has(6, &env_b64);
    let create = &scripts[7];
    assert!(!create.contains("GREETING"), "{create}");
    has(7, "'--env-file' 'C:\\Temp\\tmp1.tmp'");
    has(7, &format!("'--label' 'stella.digest={new}'"));
    has(7, &format!("'--label' 'stella.config={config}'"));
    has(7, "'--publish' '127.0.0.1::8080/tcp'");
    has(7, "'--greeting=it''s $HOME'");
    has(7, "Remove-Item -Force 'C:\\Temp\\tmp1.tmp'");
    has(8, "& docker 'start' 'web-next'");
    has(12, "& docker 'rename' 'web-next' 'web'");
    // One shell for the whole deploy.
    let actions = fake.actions();
    assert_eq!(
        actions.iter().filter(|a| *a == "Create").count(),
        1,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "Delete").count(),
        1,
        "{actions:?}"
    );
    assert_requests_well_formed(&fake);
    // Every command fits cmd.exe's line.
    for script in &scripts {
        let args = super::powershell::powershell_args(script);
        let length = "powershell".len() + args.iter().map(|a| a.len() + 1).sum::<usize>();
        assert!(
            length < super::client::COMMAND_LINE_MAX,
            "{length}: {script}"
        );
    }
}

#[tokio::test]
async fn docker_host_deploy_keeps_the_old_container_when_the_new_one_exits() {
    let old = digest(1);
    let request = deploy_request("http://unused");
    let component = request.component.clone().unwrap();
    let spec = &component.container;
    let config = deploy_docker::config_digest(spec);
    let fake = Fake::start(Plan::new(vec![
        step(&inspect_json("o1", true, &old, "older"), 0), // inspect web: the old one runs
        step("", 3),                                       // inspect web-previous: none
        step("", 0),                                       // image present
        step("", 0),                                       // rm -f web-next
        step("C:\\t.tmp\n", 0),
        step("", 0),
        step("", 0),                                              // create
        step("", 0),                                              // start
        step(&inspect_json("n1", false, &digest(2), &config), 0), // exited at once
        step("crash\n", 0),                                       // logs
        step("", 0),                                              // rm -f web-next
    ]))
    .await;
    let mut request = request;
    request.target = target(&fake.url());
    let sink = Arc::new(MemorySink::new());
    let ctx = ExecContext::new(sink.clone(), Duration::from_secs(20));
    let result = quick_executor().deploy(&request, &ctx).await;
    let failure = result.unwrap_err();
    assert_eq!(failure.previous_digest, Some(old));
    let err = failure.error;
    assert!(matches!(err, ExecError::NotRunning { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(
        sink.lines().iter().any(|l| l == "crash"),
        "{:?}",
        sink.lines()
    );
    let scripts = scripts(&fake);
    assert!(
        scripts
            .last()
            .unwrap()
            .contains("& docker 'rm' '--force' 'web-next'"),
        "{scripts:#?}"
    );
    assert!(
        !scripts.iter().any(|s| s.contains("'rename'")),
        "never swapped in"
    );
}

#[tokio::test]
async fn docker_host_deploy_of_the_running_definition_changes_nothing() {
    let request = deploy_request("http://unused");
    let component = request.component.clone().unwrap();
    let spec = &component.container;
    let config = deploy_docker::config_digest(spec);
    let fake = Fake::start(Plan::new(vec![step(
        &inspect_json("c1", true, &digest(2), &config),
        0,
    )]))
    .await;
    let mut request = request;
    request.target = target(&fake.url());
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let result = quick_executor().deploy(&request, &ctx).await;
    assert!(result.as_ref().is_ok_and(|d| !d.changed), "{result:?}");
    assert_eq!(scripts(&fake).len(), 1);
    let mut windows_service = request.clone();
    windows_service.target.target_type = TargetType::WindowsService;
    let result = quick_executor().deploy(&windows_service, &ctx).await;
    let err = result.unwrap_err().error;
    assert!(err.to_string().contains("not supported yet"), "{err}");
}

#[tokio::test]
async fn a_double_quote_in_a_word_is_refused_before_docker_runs() {
    let mut request = deploy_request("http://unused");
    request.component.as_mut().unwrap().container.command = Some(vec!["say \"hi\"".to_owned()]);
    let fake = Fake::start(Plan::new(vec![
        step("", 3),
        step("", 3),
        step("", 0),
        step("", 0),
        step("C:\\t.tmp\n", 0),
        step("", 0),
    ]))
    .await;
    request.target = target(&fake.url());
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let result = quick_executor().deploy(&request, &ctx).await;
    let err = result.unwrap_err().error;
    assert!(err.to_string().contains("mangles double quotes"), "{err}");
    assert!(!scripts(&fake).iter().any(|s| s.contains("'create'")));
}

#[test]
fn what_a_windows_host_cannot_be_given_is_refused_when_the_job_is_created() {
    let base = deploy_request("http://unused").component.unwrap().container;
    assert_eq!(super::check_windows_spec("web", &base), Ok(()));
    let refused = |change: &dyn Fn(&mut deploy_core::ContainerSpec), expected: &str| {
        let mut spec = base.clone();
        change(&mut spec);
        let err = super::check_windows_spec("web", &spec).unwrap_err();
        assert!(err.contains(expected), "{err}");
    };
    refused(
        &|s| {
            s.env.insert("KEY".into(), "line\nbreak".into());
        },
        "services.web.environment.KEY holds a line break",
    );
    refused(
        &|s| s.command = Some(vec!["say \"hi\"".into()]),
        "mangles double quotes",
    );
    refused(
        &|s| s.command = Some(vec!["echo".into(), String::new()]),
        "drops empty native arguments",
    );
    refused(
        &|s| s.entrypoint = Some(Vec::new()),
        "drops empty native arguments",
    );
    refused(
        &|s| {
            s.healthcheck = Some(deploy_core::ContainerHealthcheck {
                test: vec!["CMD".into(), "curl".into(), "-f".into()],
                interval_ms: None,
                timeout_ms: None,
                retries: None,
                start_period_ms: None,
            });
        },
        "services.web.healthcheck.test is in exec form",
    );
}

#[test]
fn recorded_create_request_and_ours_agree() {
    let ours = envelope::build(
        &Header {
            to: "http://windows-host:5985/wsman",
            message_id: "uuid:11111111-1111-1111-1111-111111111111",
            max_envelope_size: 153_600,
            operation_timeout: Duration::from_secs(20),
            shell_id: None,
        },
        &Request::Create,
    );
    let ours = String::from_utf8(ours).unwrap();
    let recorded = include_str!("fixtures/open_shell_request.xml");
    // Every element text of pywinrm's recorded request (but its locale options) appears in ours.
    for text in recorded
        .split('>')
        .filter_map(|part| part.split('<').next())
        .map(str::trim)
        .filter(|t| !t.is_empty() && !["FALSE", "437", "PT20S"].contains(t))
    {
        assert!(
            ours.contains(&format!(">{text}<")),
            "`{text}` missing in {ours}"
        );
    }
}

/// A CA and a 127.0.0.1 server certificate it signed, made with the openssl CLI: (ca, chain, key).
fn tls_material(dir: &std::path::Path) -> (String, Vec<u8>, Vec<u8>) {
    let script = "set -e\n\
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
          -subj /CN=deploy-test-ca -keyout ca.key -out ca.pem 2>/dev/null\n\
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
          -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null\n\
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf\n\
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
          -extfile ext.cnf -out server.pem 2>/dev/null\n";
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("sh runs (the openssl CLI makes the test certificates)");
    assert!(
        status.success(),
        "openssl could not make the test certificates"
    );
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    (
        String::from_utf8(read("ca.pem")).unwrap(),
        read("server.pem"),
        read("server.key"),
    )
}

#[tokio::test]
async fn https_endpoint_is_trusted_through_the_configured_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, chain, key) = tls_material(dir.path());
    let fake = Fake::start_tls(
        Plan::new(vec![Reply::ok(fake::RECEIVE_STDOUT_DONE)]),
        &chain,
        &key,
    )
    .await;
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let https = conn(&fake.https_url(), false);
    let trusted = WinrmClient::new(
        &https,
        "deploy",
        Secret::new("s3cret-pw"),
        Some(&ca),
        config(),
    )
    .unwrap();
    let out = trusted
        .run(
            "hostname",
            &[],
            "test",
            &ctx.log,
            &ctx.cancel,
            Instant::now() + ctx.timeout,
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    let untrusted =
        WinrmClient::new(&https, "deploy", Secret::new("s3cret-pw"), None, config()).unwrap();
    let err = untrusted
        .run(
            "hostname",
            &[],
            "test",
            &ctx.log,
            &ctx.cancel,
            Instant::now() + ctx.timeout,
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("certificate"), "{text}");
    assert!(!err.is_retryable(), "{text}");
    assert_eq!(fake.actions(), ["Create", "Command", "Receive", "Delete"]);
}

#[tokio::test]
async fn a_response_to_another_message_is_refused() {
    let mut plan = Plan::new(vec![]);
    plan.create = Reply::ok(fake::OPEN_SHELL.replace(
        "RelatesTo>uuid:11111111-1111-1111-1111-111111111111<",
        "RelatesTo>uuid:22222222-2222-2222-2222-222222222222<",
    ));
    let fake = Fake::start(plan).await;
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let err = run_on(&target(&fake.url()), "s3cret-pw", &["hostname"], &ctx)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ExecError::Protocol { .. }), "{text}");
    assert!(
        text.starts_with(&format!(
            "create shell on {}: expected a response relating to uuid:",
            fake.url()
        )),
        "{text}"
    );
    assert!(
        text.ends_with("got one relating to uuid:22222222-2222-2222-2222-222222222222"),
        "{text}"
    );
}

#[tokio::test]
async fn gateway_errors_retry_and_overlong_command_lines_are_refused_before_sending() {
    let mut plan = Plan::new(vec![]);
    plan.create = Reply {
        status: 503,
        body: String::new(),
        delay: Duration::ZERO,
    };
    let fake = Fake::start(plan).await;
    let ctx = ExecContext::quiet(Duration::from_secs(20));
    let err = run_on(&target(&fake.url()), "s3cret-pw", &["hostname"], &ctx)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("503"), "{err}");

    let fake = Fake::start(Plan::new(vec![])).await;
    let long = "x".repeat(5000);
    let err = run_on(&target(&fake.url()), "s3cret-pw", &["echo", &long], &ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("at most 8191 characters"), "{err}");
    assert_eq!(fake.actions(), ["Create", "Delete"]);
}

#[tokio::test]
async fn the_password_never_reaches_output_logs_or_errors() {
    let fake = Fake::start(Plan::new(vec![Reply::ok(fake::done(
        "token s3cret-pw\n",
        "denied for s3cret-pw\n",
        2,
    ))]))
    .await;
    let sink = Arc::new(MemorySink::new());
    let ctx = ExecContext::new(sink.clone(), Duration::from_secs(20));
    let out = run_on(&target(&fake.url()), "s3cret-pw", &["whoami"], &ctx)
        .await
        .unwrap();
    assert_eq!(out.exit_status, 2);
    assert_eq!(out.stdout, "token [REDACTED]\n");
    let lines = sink.lines();
    assert!(lines.iter().all(|l| !l.contains("s3cret-pw")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "denied for [REDACTED]"),
        "{lines:?}"
    );
}

fn ntlm_target(url: &str) -> Target {
    let mut c = conn(url, true);
    c.auth = WinrmAuth::Ntlm;
    let mut t = ssh_target(1);
    t.connection = Connection::Winrm(c);
    t
}

fn ntlm_plan(dir: &std::path::Path, receive: Vec<Reply>) -> Plan {
    let file = dir.join("ntlm-users");
    // smbpasswd-style store pyspnego reads: DOMAIN:USER:PASSWORD (no domain here).
    std::fs::write(&file, ":deploy:s3cret-pw\n").unwrap();
    let mut plan = Plan::new(receive);
    plan.ntlm_user_file = Some(file);
    plan
}

/// NTLMv2 judged by pyspnego's acceptor (an implementation nobody here wrote).
#[tokio::test]
async fn ntlm_handshake_is_accepted_by_pyspnego() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(ntlm_plan(
        dir.path(),
        vec![Reply::ok(fake::RECEIVE_STDOUT_DONE)],
    ))
    .await;
    let ctx = ExecContext::quiet(Duration::from_secs(30));
    let out = run_on(&ntlm_target(&fake.url()), "s3cret-pw", &["hostname"], &ctx)
        .await
        .unwrap();
    assert_eq!(out.exit_status, 0);
    assert!(out.stdout.contains("Windows IP Configuration"));
    assert_eq!(fake.actions(), ["Create", "Command", "Receive", "Delete"]);
    assert_requests_well_formed(&fake);
}

#[tokio::test]
async fn ntlm_with_a_wrong_password_is_an_authentication_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(ntlm_plan(dir.path(), vec![])).await;
    let ctx = ExecContext::quiet(Duration::from_secs(30));
    let err = run_on(
        &ntlm_target(&fake.url()),
        "wrong-password",
        &["hostname"],
        &ctx,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ExecError::Authentication { method: "ntlm", .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(fake.actions().is_empty());
}

#[tokio::test]
async fn ntlm_authenticates_again_on_a_new_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = ntlm_plan(dir.path(), vec![Reply::ok(fake::RECEIVE_STDOUT_DONE)]);
    plan.one_request_per_connection = true;
    let fake = Fake::start(plan).await;
    let ctx = ExecContext::quiet(Duration::from_secs(30));
    let out = run_on(&ntlm_target(&fake.url()), "s3cret-pw", &["hostname"], &ctx)
        .await
        .unwrap();
    assert_eq!(out.exit_status, 0);
    assert_eq!(fake.actions(), ["Create", "Command", "Receive", "Delete"]);
}

proptest::proptest! {
    #[test]
    fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = envelope::parse(&bytes);
    }

    #[test]
    fn parsing_a_cut_or_altered_recording_never_panics(cut in 0usize..6000, at in 0usize..6000, byte in proptest::prelude::any::<u8>()) {
        let mut b = fake::RECEIVE_STDOUT_DONE.as_bytes().to_vec();
        if let Some(slot) = b.get_mut(at) {
            *slot = byte;
        }
        b.truncate(cut);
        let _ = envelope::parse(&b);
    }

    #[test]
    fn ps_quote_round_trips(value in "\\PC*") {
        let quoted = super::powershell::ps_quote(&value);
        let inner: String = quoted.chars().skip(1).take(quoted.chars().count() - 2).collect();
        // Undo the doubling the way PowerShell reads a single-quoted literal.
        let mut read = String::new();
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            if ['\'', '\u{2018}', '\u{2019}', '\u{201A}', '\u{201B}'].contains(&c) {
                // An undoubled quote would end the literal early.
                proptest::prop_assert!(chars.next().is_some_and(|d| d == c), "{}", quoted);
            }
            read.push(c);
        }
        proptest::prop_assert_eq!(read, value);
    }
}

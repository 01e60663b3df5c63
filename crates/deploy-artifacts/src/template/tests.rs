//! Unit tests of template parsing: the accepted shapes, and every refusal with its message.

use super::*;
use crate::MAX_DOCUMENT_BYTES;
use crate::render::tests::fixtures::{Inputs, MINIMAL, SMALL};

fn err(template: &str) -> String {
    parse_template(template.as_bytes()).unwrap_err().to_string()
}

fn check_err(template: &str, expected: &str) {
    let got = err(template);
    assert!(
        got.contains(expected),
        "template:\n{template}\nerror: {got}\nexpected to contain: {expected}"
    );
}

#[test]
fn parses_the_representative_template() {
    let t = parse_template(SMALL.as_bytes()).unwrap();
    assert_eq!(t.version, "3.8");
    let names: Vec<_> = t.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "worker"]);
    let web = &t.services[0];
    assert_eq!(web.component.as_str(), "web");
    assert_eq!(web.environment["PRICE"].as_deref(), Some("costs $5"));
    assert_eq!(web.environment["PORT"].as_deref(), Some("8080"));
    assert_eq!(
        web.restart,
        Restart::Always,
        "merged from the x-defaults anchor"
    );
    assert!(
        web.passthrough.contains_key("logging"),
        "merged keys are carried"
    );
    assert!(!web.passthrough.contains_key("<<"));
    assert_eq!(web.stop_timeout_secs, 90);
    assert_eq!(web.ports, ["127.0.0.1:18080:8080", "19090:9090/tcp"]);
    assert_eq!(
        web.command.as_deref().unwrap().last().map(String::as_str),
        Some("$5")
    );
    let worker = &t.services[1];
    assert_eq!(
        worker.command.as_deref().unwrap(),
        ["worker", "--queue", "jobs high", "--verbose"]
    );
    assert_eq!(worker.restart, Restart::OnFailure);
    assert_eq!(worker.environment["ON"].as_deref(), Some("yes"));
    let http = t.http.as_ref().unwrap();
    assert_eq!(http.routes.len(), 3);
    assert_eq!(http.routes[2].blue, "[::1]:18081");
}

#[test]
fn minimal_template_gets_defaults() {
    let t = parse_template(MINIMAL.as_bytes()).unwrap();
    assert_eq!(t.version, DEFAULT_COMPOSE_VERSION);
    assert_eq!(t.services[0].restart, Restart::OnFailure);
    assert_eq!(t.services[0].stop_timeout_secs, 10);
    assert!(t.http.is_none());
}

#[test]
fn unknown_component_names_the_service_and_lists_the_available_ones() {
    let inputs =
        Inputs::new("services:\n  api:\n    componentName: apii\n  web:\n    componentName: web\n");
    let e = crate::render(&inputs.input()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "service `api` runs component `apii`, which is not in release `r1`; available: web, worker, comp-0, comp-1, comp-2, comp-3, comp-4"
    );
}

#[test]
fn duplicate_and_invalid_service_names_are_refused() {
    assert_eq!(
        parse_template(
            b"services:\n  web:\n    componentName: web\n  web:\n    componentName: worker\n"
        )
        .unwrap_err(),
        ArtifactError::DuplicateService {
            name: "web".to_owned()
        }
    );
    check_err(
        "services:\n  Web:\n    componentName: web\n",
        "service name `Web` is invalid: name `Web` starts with `W`",
    );
    check_err(
        &format!("services:\n  {}:\n    componentName: web\n", "a".repeat(49)),
        "expected at most 48 bytes",
    );
    check_err(
        "services:\n  web:\n    componentName: Web\n",
        "service `web` key `componentName` is invalid",
    );
    check_err(
        "services:\n  web:\n    ports: []\n",
        "service `web` componentName is `(missing)`",
    );
    check_err("services: {}\n", "expected at least one service");
}

#[test]
fn yaml_syntax_errors_carry_line_and_column() {
    let e = parse_template(b"services:\n  web:\n    componentName: [web\n").unwrap_err();
    let ArtifactError::Yaml { line, column, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!((*line, *column), (4, 1), "{e}");
    assert!(
        e.to_string()
            .starts_with("compose template is not valid at line 4, column 1: "),
        "{e}"
    );
    let e = parse_template(b"services:\n  web:\n    componentName: web\n\tbad: tab\n").unwrap_err();
    assert!(matches!(e, ArtifactError::Yaml { line: 4, .. }), "{e}");
}

#[test]
fn unknown_top_level_keys_are_typos_but_extension_fields_are_fine() {
    let e =
        parse_template(b"services:\n  web:\n    componentName: web\nservces: {}\n").unwrap_err();
    assert!(
        matches!(
            e,
            ArtifactError::Yaml {
                line: 4,
                column: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("unknown field `servces`, expected one of `version`, `services`"),
        "{e}"
    );
    assert!(
        parse_template(b"x-anything: {a: 1}\nservices:\n  web:\n    componentName: web\n").is_ok()
    );
    check_err(
        "http:\n  routes: []\n  lisen: 80\nservices:\n  web:\n    componentName: web\n",
        "unknown field `lisen`",
    );
}

#[test]
fn documents_over_the_size_limit_are_refused_before_parsing() {
    let mut big = String::from("services:\n  web:\n    componentName: web\n    command:\n");
    while big.len() <= MAX_DOCUMENT_BYTES {
        big.push_str(
            "      - \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\n",
        );
    }
    let e = parse_template(big.as_bytes()).unwrap_err();
    assert_eq!(
        e,
        ArtifactError::TooLarge {
            what: "compose template",
            size: big.len(),
            limit: MAX_DOCUMENT_BYTES
        }
    );
    assert!(
        parse_template(b"\xff\xfe")
            .unwrap_err()
            .to_string()
            .contains("not UTF-8")
    );
}

#[test]
fn alias_expansion_bombs_are_refused_not_expanded() {
    // "Billion laughs": 9 levels of 9 aliases, 9^9 nodes when expanded.
    let mut bomb = String::from("x-a0: &a0 [\"lol\"]\n");
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 9].join(", ");
        bomb.push_str(&format!("x-a{level}: &a{level} [{refs}]\n"));
    }
    bomb.push_str("services:\n  web:\n    componentName: web\n    command: *a9\n");
    let started = std::time::Instant::now();
    let e = parse_template(bomb.as_bytes()).unwrap_err();
    assert!(matches!(e, ArtifactError::TooManyNodes { .. }), "{e:?}");
    assert!(e.to_string().contains("alias expansion bomb"), "{e}");
    // Not a timing assertion on the renderer: a bomb that was expanded would take minutes.
    assert!(started.elapsed().as_secs() < 60);

    // The node budget holds without aliases too: a flat list of just over a million numbers (2 MB).
    let mut wide = String::from("services:\n  web:\n    componentName: web\n    command: [");
    wide.push_str(&"0,".repeat(1_000_000));
    wide.push_str("0]\n");
    assert!(wide.len() < MAX_DOCUMENT_BYTES);
    let e = parse_template(wide.as_bytes()).unwrap_err();
    assert_eq!(
        e,
        ArtifactError::TooManyNodes {
            what: "compose template",
            limit: crate::MAX_NODES
        }
    );

    // Moderate, legitimate reuse of anchors still works.
    let reuse = "x-env: &env {A: \"1\"}\nservices:\n  a:\n    componentName: web\n    environment: *env\n  b:\n    componentName: web\n    environment: *env\n";
    let t = parse_template(reuse.as_bytes()).unwrap();
    assert_eq!(t.services[1].environment["A"].as_deref(), Some("1"));
}

/// A 1 MB string (or tag) aliased 1,000 times (3 levels of 10) under a service key: few
/// nodes, but a gigabyte once expanded. Before the byte budget this input parsed, in 11 s
/// and 2 GB, and rendered a 1 GB compose file (found while fuzzing `parse_template`).
fn long_scalar_bomb(anchored: &str) -> String {
    let mut bomb = format!("x-s: &s {anchored}\n");
    let mut previous = "s".to_owned();
    for level in 1..=3 {
        let refs = vec![format!("*{previous}"); 10].join(", ");
        bomb.push_str(&format!("x-l{level}: &l{level} [{refs}]\n"));
        previous = format!("l{level}");
    }
    bomb.push_str(&format!(
        "services:\n  web:\n    componentName: web\n    x-bomb: *{previous}\n"
    ));
    bomb
}

#[test]
fn long_string_alias_bombs_are_refused_by_the_byte_budget() {
    let long = "a".repeat(1_000_000);
    for (what, bomb) in [
        ("string", long_scalar_bomb(&format!("\"{long}\""))),
        ("tag", long_scalar_bomb(&format!("!{long} x"))),
    ] {
        assert!(bomb.len() < MAX_DOCUMENT_BYTES, "{what}");
        let e = parse_template(bomb.as_bytes()).unwrap_err();
        assert_eq!(
            e,
            ArtifactError::TooManyScalarBytes {
                what: "compose template",
                limit: crate::MAX_SCALAR_BYTES
            },
            "{what}"
        );
        assert!(
            e.to_string().contains("16777216 bytes of YAML scalars"),
            "{e}"
        );
    }

    // A document just under the size limit, all scalars and no aliases, is within the budget.
    let mut big = String::from("services:\n  web:\n    componentName: web\n    command:\n");
    let item = format!("      - \"{}\"\n", "x".repeat(1000));
    while big.len() + item.len() <= MAX_DOCUMENT_BYTES {
        big.push_str(&item);
    }
    let t = parse_template(big.as_bytes()).unwrap();
    assert!(t.services[0].command.as_ref().unwrap().len() > 4000);
}

#[test]
fn environment_rules() {
    let svc =
        |env: &str| format!("services:\n  web:\n    componentName: web\n    environment:\n{env}");
    check_err(
        &svc("      1BAD: x\n"),
        "environment variable name `1BAD` of service `web` is invalid; expected [A-Za-z_][A-Za-z0-9_]*",
    );
    check_err(
        &svc("      - \"A-B=x\"\n"),
        "environment variable name `A-B`",
    );
    check_err(
        &svc("      A: \"nul\\0\"\n"),
        "expected a value without NUL",
    );
    check_err(&svc("      A: \"${HOME}\"\n"), "`$$` for a literal `$`");
    check_err(&svc("      A: \"$HOME\"\n"), "`$$` for a literal `$`");
    // Declared without a value: the deploy environment's variables give it one.
    let t = parse_template(svc("      A:\n      - B\n").as_bytes());
    assert!(t.is_err(), "a mapping and a list at once is not YAML");
    let t = parse_template(svc("      A:\n      B: \"$${HOME}\"\n").as_bytes()).unwrap();
    assert_eq!(t.services[0].environment["A"], None);
    assert_eq!(t.services[0].environment["B"].as_deref(), Some("${HOME}"));
    let t = parse_template(svc("      - A\n").as_bytes()).unwrap();
    assert_eq!(t.services[0].environment["A"], None);
    check_err(&svc("      A: true\n"), "quote booleans");
    check_err(&svc("      STELLA_DIGEST: x\n"), "no `STELLA_` variables");
    check_err(&svc("      - A=1\n      - A=2\n"), "each variable once");
    // A line break travels in the compose file and the Docker API (not in an env-file).
    let t = parse_template(svc("      A: \"line\\nbreak\"\n").as_bytes()).unwrap();
    assert_eq!(
        t.services[0].environment["A"].as_deref(),
        Some("line\nbreak")
    );
    let t = parse_template(svc("      - \"A=x=y\"\n      - B=\n").as_bytes()).unwrap();
    assert_eq!(t.services[0].environment["A"].as_deref(), Some("x=y"));
    assert_eq!(t.services[0].environment["B"].as_deref(), Some(""));
}

#[test]
fn keys_the_release_owns_and_unsupported_yaml_are_refused() {
    let svc = |extra: &str| format!("services:\n  web:\n    componentName: web\n{extra}");
    check_err(
        &svc("    image: nginx:latest\n"),
        "services.web.image is `\"nginx:latest\"`; expected no such key: the release pins the image",
    );
    check_err(&svc("    env_file: [x.env]\n"), "services.web.env_file");
    check_err(&svc("    build: .\n"), "services.web.build");
    check_err(
        &svc("    ports: !reset []\n"),
        "expected plain YAML without tags",
    );
    check_err(
        &svc("    labels:\n      stella.digest: x\n"),
        "no `stella.` labels",
    );
    check_err(&svc("    restart: sometimes\n"), "one of `no`, `always`");
    check_err(&svc("    stop_grace_period: 10 s\n"), "a duration such as");
    check_err(
        &svc("    command: \"echo 'unterminated\"\n"),
        "balanced single quotes",
    );
    check_err(
        &svc("    ports: [\"80 :80\"]\n"),
        "`[ip:][published:]target[/protocol]`",
    );
    check_err(
        "services:\n  web: nginx\n",
        "service `web` is `\"nginx\"`; expected a mapping",
    );
}

#[test]
fn http_routes_are_validated() {
    let t = |http: &str| format!("services:\n  web:\n    componentName: web\nhttp:\n{http}");
    let route = |path: &str, service: &str, blue: &str| {
        t(&format!(
            "  routes:\n    - path: \"{path}\"\n      service: {service}\n      blue: \"{blue}\"\n      green: 127.0.0.1:2\n"
        ))
    };
    check_err(
        &route("/", "api", "127.0.0.1:1"),
        "http.routes[0].service is `api`; expected a service of the template; available: web",
    );
    check_err(
        &route("no-slash", "web", "127.0.0.1:1"),
        "http.routes[0].path",
    );
    check_err(&route("/a;b", "web", "127.0.0.1:1"), "http.routes[0].path");
    check_err(&route("/", "web", "127.0.0.1"), "`host:port`");
    check_err(&route("/", "web", "bad host:80"), "`host:port`");
    check_err(&route("/", "web", "127.0.0.1:0"), "`host:port`");
    check_err(&t("  listen: 0\n  routes: []\n"), "http.listen");
    check_err(
        &t("  serverName: \"a b\"\n  routes: []\n"),
        "http.serverName",
    );
    check_err(
        &t(
            "  routes:\n    - {path: /, service: web, blue: \"127.0.0.1:1\", green: \"127.0.0.1:2\"}\n    - {path: /, service: web, blue: \"127.0.0.1:1\", green: \"127.0.0.1:2\"}\n",
        ),
        "each path once",
    );
    check_err(
        &t(
            "  routes:\n    - {path: /, service: web, blue: \"127.0.0.1:1\", green: \"127.0.0.1:2\"}\n    - {path: /b, service: web, blue: \"127.0.0.1:3\", green: \"127.0.0.1:2\"}\n",
        ),
        "the same addresses as the other routes of `web`",
    );
}

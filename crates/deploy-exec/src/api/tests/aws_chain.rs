//! The AWS default chain against loopback fakes of each source's documented wire format (IMDSv2, ECS container endpoint, STS web identity; moto's STS too), its order, its cache and a rotation in the middle of an ECS rollout.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use deploy_core::{ApiConnection, Connection};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ecs::{Rollout, ecs_handler, ecs_target};
use super::emulators::moto;
use super::fake::{Fake, Handler, Recorded, Reply, assert_no_secret, ctx, executor, request};
use crate::api::aws::AwsChain;
use crate::api::aws::chain::refresh_at;
use crate::api::aws::container::full_uri;
use crate::api::aws::profile::{FileKind, Files, Selected, parse, select};
use crate::api::{
    ApiExecutor, ApiExecutorConfig, AwsCredentials, AwsEnvironment, SigningInput, sign,
};
use crate::errors::ExecError;
use crate::executor::Executor;
use crate::logs::{MemorySink, TaskLog};
use crate::secrets::Secret;

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/deploy";
const IMDS_TOKEN: &str = "AQAEAimds-session-token==";
const CONTAINER_TOKEN: &str = "container-auth-token-f00d";

/// An environment of `vars` with an empty home directory (no `~/.aws` files), so the
/// machine's own files never leak into a test.
fn env(home: &Path, vars: &[(&str, &str)]) -> AwsEnvironment {
    AwsEnvironment::new(vars.iter().copied(), Some(home.to_path_buf()))
}

fn chain(env: AwsEnvironment) -> AwsChain {
    AwsChain::new(env, std::time::Duration::from_secs(5))
}

fn log() -> (TaskLog, MemorySink) {
    let sink = MemorySink::new();
    (TaskLog::new(Arc::new(sink.clone()), 1 << 20), sink)
}

/// `now + seconds` as the sources spell Expiration (whole seconds, `Z`).
fn expiration(seconds: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .replace_nanosecond(0)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// The secret key and session token the fakes hand out with access key `id`.
fn secret_of(id: &str) -> String {
    format!("secret-for-{id}")
}
fn token_of(id: &str) -> String {
    format!("session-token-for-{id}")
}

/// An IMDSv2 fake following the EC2 documentation: a PUT to `/latest/api/token` with
/// the TTL header issues a session token, every GET without it is refused with 401
/// (as the real service does when IMDSv1 is disabled). Each credentials read hands out
/// key `ASIAIMDS<n>` expiring in `lifetime` seconds.
fn imds_handler(lifetime: i64, issued: Arc<AtomicUsize>) -> Handler {
    Arc::new(move |r: &Recorded| {
        let role_path = "/latest/meta-data/iam/security-credentials/";
        match (r.method.as_str(), r.path.as_str()) {
            ("PUT", "/latest/api/token") => {
                if r.header("x-aws-ec2-metadata-token-ttl-seconds")
                    .parse::<u32>()
                    .is_ok()
                {
                    Reply::Text(200, IMDS_TOKEN.into())
                } else {
                    Reply::Text(400, "missing x-aws-ec2-metadata-token-ttl-seconds".into())
                }
            }
            ("GET", _) if r.header("x-aws-ec2-metadata-token") != IMDS_TOKEN => {
                Reply::Text(401, String::new())
            }
            ("GET", p) if p == role_path => Reply::Text(200, "deploy-role".into()),
            ("GET", p) if p == format!("{role_path}deploy-role") => {
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                let id = format!("ASIAIMDS{n}");
                Reply::Json(
                    200,
                    json!({
                        "Code": "Success",
                        "LastUpdated": expiration(0),
                        "Type": "AWS-HMAC",
                        "AccessKeyId": id,
                        "SecretAccessKey": secret_of(&id),
                        "Token": token_of(&id),
                        "Expiration": expiration(lifetime),
                    }),
                )
            }
            _ => Reply::Text(404, "not found".into()),
        }
    })
}

/// The ECS container credentials endpoint: GET with the `Authorization` token, JSON answer.
fn container_handler() -> Handler {
    Arc::new(|r: &Recorded| {
        if r.method != "GET" || r.path != "/v2/credentials/task" {
            return Reply::Text(404, "not found".into());
        }
        if r.header("authorization") != CONTAINER_TOKEN {
            // Echo what was sent, as a careless proxy might: the error must redact it.
            return Reply::Text(
                401,
                format!("bad authorization `{}`", r.header("authorization")),
            );
        }
        let id = "ASIACONTAINER";
        Reply::Json(
            200,
            json!({
                "AccessKeyId": id,
                "SecretAccessKey": secret_of(id),
                "Token": token_of(id),
                "Expiration": expiration(3600),
                "RoleArn": ROLE_ARN,
            }),
        )
    })
}

/// STS AssumeRoleWithWebIdentity as documented: a form POST, an XML answer, and an
/// `ErrorResponse` for a token it does not accept (anything but `accepted`).
fn sts_handler(accepted: &'static [&'static str]) -> Handler {
    Arc::new(move |r: &Recorded| {
        let form: BTreeMap<String, String> = reqwest::Url::parse(&format!("http://x/?{}", r.body))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        let field = |k: &str| form.get(k).cloned().unwrap_or_default();
        if r.method != "POST"
            || field("Action") != "AssumeRoleWithWebIdentity"
            || field("Version") != "2011-06-15"
            || field("RoleArn") != ROLE_ARN
        {
            return Reply::Text(400, format!("unexpected request: {}", r.body));
        }
        let token = field("WebIdentityToken");
        if !accepted.contains(&token.as_str()) {
            return Reply::Text(
                400,
                format!(
                    r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>
  <Message>Couldn't retrieve verification key from your identity provider for token {token}</Message></Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>"#
                ),
            );
        }
        let id = format!("ASIAWEB{}", token.len());
        Reply::Text(
            200,
            format!(
                r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:deploy:deployd</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/deploy/{session}</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{token_out}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expires}</Expiration>
      <AccessKeyId>{id}</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#,
                session = field("RoleSessionName"),
                token_out = token_of(&id),
                secret = secret_of(&id),
                expires = expiration(3600),
            ),
        )
    })
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

// ---------------------------------------------------------------- profile files

#[test]
fn profile_sections_are_spelled_per_file() {
    let config = parse(
        "# comment\n[default]\nregion = eu-west-1\n[profile prod]\naws_access_key_id = AKIACONFIG\n\
         s3 =\n  max_concurrent_requests = 4\n[prod-typo]\nregion = x\n[sso-session corp]\nsso_region = x\n",
        FileKind::Config,
    );
    assert_eq!(
        config.profiles.keys().collect::<Vec<_>>(),
        ["default", "prod"]
    );
    assert_eq!(config.profiles["prod"]["aws_access_key_id"], "AKIACONFIG");
    assert!(
        !config.profiles["prod"].contains_key("max_concurrent_requests"),
        "nested settings are not profile keys"
    );
    assert_eq!(config.misspelt["prod-typo"], "[prod-typo]");

    let credentials = parse(
        "[prod]\naws_access_key_id=AKIACREDS\n; comment\naws_secret_access_key = s/ecr+et\n[profile other]\nx=y\n",
        FileKind::Credentials,
    );
    assert_eq!(credentials.profiles.keys().collect::<Vec<_>>(), ["prod"]);
    assert_eq!(
        credentials.profiles["prod"]["aws_secret_access_key"],
        "s/ecr+et"
    );
    assert_eq!(credentials.misspelt["other"], "[profile other]");
}

#[test]
fn profile_selection_merges_both_files_and_names_a_missing_profile() {
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir(&aws).unwrap();
    write(
        &aws.join("config"),
        "[profile prod]\naws_access_key_id = AKIACONFIG\nregion = eu-west-1\n[staging]\nregion = x\n",
    );
    write(
        &aws.join("credentials"),
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\
         [prod]\naws_access_key_id = AKIACREDS\naws_secret_access_key = p\n",
    );
    let pick = |vars: &[(&str, &str)]| {
        let e = env(home.path(), vars);
        select(&e, &Files::load(&e).unwrap())
    };

    // The credentials file wins over the config file for the same key.
    let Selected::Found { name, keys } = pick(&[("AWS_PROFILE", "prod")]).unwrap() else {
        panic!("prod not found");
    };
    assert_eq!(name, "prod");
    assert_eq!(keys["aws_access_key_id"], "AKIACREDS");
    assert_eq!(keys["region"], "eu-west-1");
    let Selected::Found { name, .. } = pick(&[]).unwrap() else {
        panic!("default not found");
    };
    assert_eq!(name, "default");

    let err = pick(&[("AWS_PROFILE", "nope")]).unwrap_err().to_string();
    assert!(
        err.contains("`nope`") && err.contains("profiles found: default, prod"),
        "{err}"
    );
    // `[staging]` in the config file is not a profile: the error says how to spell it.
    let err = pick(&[("AWS_PROFILE", "staging")]).unwrap_err().to_string();
    assert!(err.contains("expected `[profile staging]`"), "{err}");

    // The override variables replace ~/.aws; a missing default is no error, only absent.
    let other = tempfile::tempdir().unwrap();
    let vars = [
        (
            "AWS_CONFIG_FILE",
            other.path().join("c").to_str().unwrap().to_owned(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            other.path().join("k").to_str().unwrap().to_owned(),
        ),
    ];
    let e = AwsEnvironment::new(vars, Some(home.path().to_path_buf()));
    assert!(
        matches!(select(&e, &Files::load(&e).unwrap()).unwrap(), Selected::Absent(why) if why.contains("no [default] profile"))
    );
}

#[tokio::test]
async fn profiles_asking_for_an_unsupported_mechanism_or_looping_are_refused_not_skipped() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");
    write(
        &config,
        "[profile helper]\ncredential_process = /usr/bin/get-keys\n\
         [profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n\
         [profile b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = a\n\
         [profile dangling]\nrole_arn = arn:aws:iam::1:role/d\nsource_profile = gone\n\
         [profile bare]\nrole_arn = arn:aws:iam::1:role/e\n",
    );
    for (profile, expected) in [
        ("helper", "`credential_process`"),
        ("a", "loop back to profile `a`"),
        ("dangling", "source_profile `gone` is not in"),
        ("bare", "none of source_profile, credential_source"),
    ] {
        let c = chain(env(
            home.path(),
            &[
                ("AWS_PROFILE", profile),
                ("AWS_CONFIG_FILE", config.to_str().unwrap()),
                // Would answer if the chain fell through to it.
                ("AWS_ACCESS_KEY_ID_UNUSED", "x"),
            ],
        ));
        let err = c.load("eu-west-1").await.unwrap_err();
        assert!(
            matches!(err, ExecError::Secret { .. }) && !err.is_retryable(),
            "{profile}: {err:?}"
        );
        assert!(err.to_string().contains(expected), "{profile}: {err}");
    }
}

/// Checks the SigV4 signature of a recorded request against the secret of its access
/// key (`secret(id)`: secret and session token); returns that key.
fn verify_signature(
    r: &Recorded,
    service: &str,
    secret: impl Fn(&str) -> (String, Option<String>),
) -> String {
    let auth = r.header("authorization");
    let id = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap()
        .to_owned();
    let signed: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .split(';')
        .collect();
    let headers: Vec<(&str, &str)> = signed.iter().map(|h| (*h, r.header(h))).collect();
    let (key, token) = secret(&id);
    assert_eq!(
        r.header("x-amz-security-token"),
        token.as_deref().unwrap_or("")
    );
    let credentials = AwsCredentials::new(&id, Secret::new(key), token.map(Secret::new));
    let expected = sign(
        &credentials,
        &SigningInput {
            method: &r.method,
            path: &r.path,
            query: "",
            headers: &headers,
            body: r.body.as_bytes(),
            region: "eu-west-1",
            service,
            amz_date: r.header("x-amz-date"),
        },
    );
    assert_eq!(auth, expected, "signature of a request signed with {id}");
    id
}

/// Secrets of the keys the tests hand out: `AKIABASE` (a profile's static key) and
/// every `ASIA…` key a fake issued.
fn known_secret(id: &str) -> (String, Option<String>) {
    if id == "AKIABASE" {
        ("base-secret".into(), None)
    } else {
        (secret_of(id), Some(token_of(id)))
    }
}

/// STS AssumeRole (signed; the signature is checked with [`known_secret`]): issues
/// `ASIAROLE-<role name>` for the role.
fn assume_role_handler() -> Handler {
    Arc::new(|r: &Recorded| {
        let form: BTreeMap<String, String> = reqwest::Url::parse(&format!("http://x/?{}", r.body))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        if form.get("Action").map(String::as_str) != Some("AssumeRole") {
            return Reply::Text(400, "expected AssumeRole".into());
        }
        let signer = verify_signature(r, "sts", known_secret);
        let role = form["RoleArn"].rsplit('/').next().unwrap().to_uppercase();
        let id = format!("ASIAROLE{role}");
        Reply::Text(
            200,
            format!(
                r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>{signer}</SourceIdentity>
    <AssumedRoleUser><Arn>{arn}/{session}</Arn><AssumedRoleId>ARO123EXAMPLE123:{session}</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{id}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{token}</SessionToken>
      <Expiration>{expires}</Expiration>
    </Credentials>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#,
                arn = form["RoleArn"],
                session = form["RoleSessionName"],
                secret = secret_of(&id),
                token = token_of(&id),
                expires = expiration(3600),
            ),
        )
    })
}

#[tokio::test]
async fn profile_roles_are_assumed_in_order_each_signed_by_the_previous_keys() {
    let home = tempfile::tempdir().unwrap();
    let sts = Fake::start(assume_role_handler()).await;
    let config = home.path().join("config");
    let credentials = home.path().join("credentials");
    write(
        &config,
        "[profile deploy]\nrole_arn = arn:aws:iam::222222222222:role/deploy\nsource_profile = hub\n\
         external_id = ext-42\nrole_session_name = deployd-prod\nregion = eu-west-1\n\
         [profile hub]\nrole_arn = arn:aws:iam::111111111111:role/hub\nsource_profile = base\n\
         [profile imdsrole]\nrole_arn = arn:aws:iam::1:role/fromimds\ncredential_source = Ec2InstanceMetadata\n",
    );
    write(
        &credentials,
        "[base]\naws_access_key_id = AKIABASE\naws_secret_access_key = base-secret\n",
    );
    let files = [
        ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
        ("AWS_ENDPOINT_URL_STS", sts.base.as_str()),
    ];
    let with = |more: &[(&'static str, &'static str)]| {
        let mut vars = files.to_vec();
        vars.extend_from_slice(more);
        chain(env(home.path(), &vars))
    };
    let session = with(&[("AWS_PROFILE", "deploy")])
        .load("eu-west-1")
        .await
        .unwrap();
    assert_eq!(session.credentials.access_key_id, "ASIAROLEDEPLOY");
    assert_eq!(
        session.source,
        "profile `deploy`: role `arn:aws:iam::222222222222:role/deploy` over role \
         `arn:aws:iam::111111111111:role/hub` over static keys of profile `base`"
    );
    let requests = sts.requests();
    let signers: Vec<String> = requests
        .iter()
        .map(|r| {
            r.header("authorization")
                .split('/')
                .next()
                .unwrap()
                .rsplit('=')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(signers, ["AKIABASE", "ASIAROLEHUB"]);
    assert!(
        requests[1].body.contains("ExternalId=ext-42"),
        "{}",
        requests[1].body
    );
    assert!(
        requests[1].body.contains("RoleSessionName=deployd-prod"),
        "{}",
        requests[1].body
    );

    // credential_source = Ec2InstanceMetadata: the instance role signs the AssumeRole.
    let imds = Fake::start(imds_handler(3600, Arc::new(AtomicUsize::new(0)))).await;
    let mut vars = files.to_vec();
    vars.push(("AWS_PROFILE", "imdsrole"));
    vars.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.base.as_str()));
    let session = chain(env(home.path(), &vars))
        .load("eu-west-1")
        .await
        .unwrap();
    assert_eq!(session.credentials.access_key_id, "ASIAROLEFROMIMDS");
    assert!(session.expires.is_some());
    assert!(
        sts.requests()[2]
            .header("authorization")
            .contains("ASIAIMDS1/")
    );
}

#[tokio::test]
async fn profile_role_assumption_is_understood_by_moto_sts() {
    let moto = moto().await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");
    let token_file = home.path().join("token");
    write(&token_file, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln");
    write(
        &config,
        &format!(
            "[default]\naws_access_key_id = AKIABASE\naws_secret_access_key = base-secret\n\
             [profile ci]\nrole_arn = {ROLE_ARN}\nsource_profile = default\n\
             [profile pod]\nrole_arn = {ROLE_ARN}\nweb_identity_token_file = {}\n",
            token_file.display()
        ),
    );
    for profile in ["ci", "pod"] {
        let vars = [
            ("AWS_PROFILE", profile),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_ENDPOINT_URL_STS", moto.base.as_str()),
        ];
        let session = chain(env(home.path(), &vars))
            .load("eu-west-1")
            .await
            .unwrap();
        assert!(
            session.credentials.access_key_id.starts_with("ASIA"),
            "{profile}: {session:?}"
        );
        assert!(
            session
                .expires
                .is_some_and(|e| e > OffsetDateTime::now_utc())
        );
    }
}

// ---------------------------------------------------------------- IMDSv2

#[tokio::test]
async fn imds_v2_token_then_role_then_credentials() {
    let home = tempfile::tempdir().unwrap();
    let issued = Arc::new(AtomicUsize::new(0));
    let imds = Fake::start(imds_handler(3600, issued.clone())).await;

    // The fake is as strict as the real service: no token header, no answer.
    let refused = reqwest::get(format!(
        "{}/latest/meta-data/iam/security-credentials/",
        imds.base
    ))
    .await
    .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    let c = chain(env(
        home.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.base.as_str())],
    ));
    let session = c.load("eu-west-1").await.unwrap();
    assert_eq!(session.credentials.access_key_id, "ASIAIMDS1");
    assert_eq!(
        session.credentials.session_token(),
        Some(token_of("ASIAIMDS1").as_str())
    );
    assert!(session.expires.is_some());
    assert_eq!(session.source, "instance metadata (role `deploy-role`)");
    let calls = imds.calls();
    assert_eq!(
        calls[1..],
        [
            "PUT /latest/api/token",
            "GET /latest/meta-data/iam/security-credentials/",
            "GET /latest/meta-data/iam/security-credentials/deploy-role",
        ]
    );
    let requests = imds.requests();
    assert_eq!(
        requests[1].header("x-aws-ec2-metadata-token-ttl-seconds"),
        "21600"
    );
    assert!(
        requests[2..]
            .iter()
            .all(|r| r.header("x-aws-ec2-metadata-token") == IMDS_TOKEN)
    );
}

#[tokio::test]
async fn imds_disabled_or_unreachable_ends_the_chain_with_every_reason() {
    let home = tempfile::tempdir().unwrap();
    let port = deploy_testkit::free_port().unwrap();
    let closed = format!("http://127.0.0.1:{port}");
    for (vars, expected) in [
        (
            vec![("AWS_EC2_METADATA_DISABLED", "true")],
            "AWS_EC2_METADATA_DISABLED is true".to_owned(),
        ),
        (
            vec![("AWS_EC2_METADATA_SERVICE_ENDPOINT", closed.as_str())],
            format!("127.0.0.1:{port}"),
        ),
    ] {
        let err = chain(env(home.path(), &vars))
            .load("eu-west-1")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ExecError::Secret { .. }), "{err:?}");
        for part in [
            "environment: AWS_ACCESS_KEY_ID unset",
            "profile: no [default] profile",
            "web identity: AWS_WEB_IDENTITY_TOKEN_FILE unset",
            "container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            expected.as_str(),
        ] {
            assert!(text.contains(part), "`{part}` missing from: {text}");
        }
    }
}

// ---------------------------------------------------------------- container credentials

#[tokio::test]
async fn container_endpoint_sends_the_token_from_the_file_and_reads_the_json() {
    let home = tempfile::tempdir().unwrap();
    let fake = Fake::start(container_handler()).await;
    let token_file = home.path().join("token");
    write(&token_file, &format!("{CONTAINER_TOKEN}\n"));
    let full = format!("{}/v2/credentials/task", fake.base);
    let vars = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", full.as_str()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_str().unwrap(),
        ),
        // The file wins over the variable.
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "stale-token-value"),
    ];
    let session = chain(env(home.path(), &vars))
        .load("eu-west-1")
        .await
        .unwrap();
    assert_eq!(session.credentials.access_key_id, "ASIACONTAINER");
    assert_eq!(fake.requests()[0].header("authorization"), CONTAINER_TOKEN);

    // A rotated file is read again; the wrong token is a permanent 401 that never
    // shows the token, even though the endpoint echoes it.
    write(&token_file, "rotated-wrong-token-value");
    let err = chain(env(home.path(), &vars))
        .load("eu-west-1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecError::ApiStatus { status: 401, .. }) && !err.is_retryable(),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("rotated-wrong-token-value"),
        "{err}"
    );
    assert_eq!(
        fake.requests()[1].header("authorization"),
        "rotated-wrong-token-value"
    );
}

#[test]
fn container_full_uri_is_limited_to_loopback_and_the_agent_addresses_over_http() {
    for ok in [
        "http://127.0.0.1:51679/creds",
        "http://127.0.0.2/creds",
        "http://localhost/creds",
        "http://[::1]/creds",
        "http://169.254.170.2/v2/credentials/x",
        "http://169.254.170.23/v1/credentials",
        "http://[fd00:ec2::23]/v1/credentials",
        "https://creds.example.com/x",
    ] {
        assert!(full_uri(ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://10.0.0.5/creds",
        "http://169.254.169.254/latest",
        "http://example.com/creds",
        "ftp://127.0.0.1/x",
        "not a url",
    ] {
        let err = full_uri(bad).unwrap_err();
        assert!(
            matches!(err, ExecError::InvalidInput { .. }),
            "{bad}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------- web identity

#[tokio::test]
async fn web_identity_posts_the_current_token_file_and_reads_the_xml() {
    let home = tempfile::tempdir().unwrap();
    let sts = Fake::start(sts_handler(&["eyJ-token-one", "eyJ-token-number-two"])).await;
    let token_file = home.path().join("token");
    write(&token_file, "eyJ-token-one\n");
    let vars = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AWS_ROLE_ARN", ROLE_ARN),
        ("AWS_ROLE_SESSION_NAME", "deployd-test"),
        ("AWS_ENDPOINT_URL", "http://192.0.2.1:1"),
        // The service-specific endpoint wins over the general one.
        ("AWS_ENDPOINT_URL_STS", sts.base.as_str()),
    ];
    let c = chain(env(home.path(), &vars));
    let first = c.load("eu-west-1").await.unwrap();
    assert_eq!(first.credentials.access_key_id, "ASIAWEB13");
    assert_eq!(
        first.credentials.session_token(),
        Some(token_of("ASIAWEB13").as_str())
    );
    assert_eq!(first.source, format!("web identity (role `{ROLE_ARN}`)"));
    let request = &sts.requests()[0];
    assert!(
        request
            .header("content-type")
            .starts_with("application/x-www-form-urlencoded")
    );
    assert!(
        request.body.contains("RoleSessionName=deployd-test"),
        "{}",
        request.body
    );
    assert!(
        request.header("authorization").is_empty(),
        "the call is unsigned"
    );

    // The kubelet rotates the token file: the next load sends the new token.
    write(&token_file, "eyJ-token-number-two");
    let second = c.load("eu-west-1").await.unwrap();
    assert_eq!(second.credentials.access_key_id, "ASIAWEB20");

    // A token STS refuses: its documented ErrorResponse, permanent, token redacted.
    write(&token_file, "eyJ-refused-token");
    let err = c.load("eu-west-1").await.unwrap_err();
    assert!(
        matches!(err, ExecError::ApiStatus { status: 400, .. }) && !err.is_retryable(),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("InvalidIdentityToken"), "{text}");
    assert!(!text.contains("eyJ-refused-token"), "{text}");

    let missing_role = chain(env(home.path(), &vars[..1]))
        .load("eu-west-1")
        .await
        .unwrap_err();
    assert!(
        missing_role.to_string().contains("AWS_ROLE_ARN is not"),
        "{missing_role}"
    );
}

#[tokio::test]
async fn web_identity_is_understood_by_moto_sts() {
    let moto = moto().await;
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    write(&token_file, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln");
    let vars = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AWS_ROLE_ARN", ROLE_ARN),
        ("AWS_ENDPOINT_URL_STS", moto.base.as_str()),
    ];
    let session = chain(env(home.path(), &vars))
        .load("eu-west-1")
        .await
        .unwrap();
    assert!(
        session.credentials.access_key_id.starts_with("ASIA"),
        "{session:?}"
    );
    assert!(
        session
            .credentials
            .session_token()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        session
            .expires
            .is_some_and(|e| e > OffsetDateTime::now_utc())
    );
}

// ---------------------------------------------------------------- order and cache

#[tokio::test]
async fn the_chain_takes_the_first_configured_source_in_sdk_order() {
    let home = tempfile::tempdir().unwrap();
    let issued = Arc::new(AtomicUsize::new(0));
    let imds = Fake::start(imds_handler(3600, issued)).await;
    let container = Fake::start(container_handler()).await;
    let sts = Fake::start(sts_handler(&["eyJ-token-one"])).await;
    let token_file = home.path().join("token");
    write(&token_file, "eyJ-token-one");
    let credentials = home.path().join("credentials");
    write(
        &credentials,
        "[default]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = p\n",
    );
    let full = format!("{}/v2/credentials/task", container.base);
    let all: Vec<(&str, &str)> = vec![
        ("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT"),
        ("AWS_SECRET_ACCESS_KEY", "e"),
        ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AWS_ROLE_ARN", ROLE_ARN),
        ("AWS_ENDPOINT_URL_STS", sts.base.as_str()),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", full.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", CONTAINER_TOKEN),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.base.as_str()),
    ];
    // Remove one source after the other, from the top.
    let steps: [(&[&str], &str); 5] = [
        (&[], "AKIAENVIRONMENT"),
        (&["AWS_ACCESS_KEY_ID"], "AKIAPROFILE"),
        (&["AWS_SHARED_CREDENTIALS_FILE"], "ASIAWEB13"),
        (&["AWS_WEB_IDENTITY_TOKEN_FILE"], "ASIACONTAINER"),
        (&["AWS_CONTAINER_CREDENTIALS_FULL_URI"], "ASIAIMDS1"),
    ];
    let mut removed: Vec<&str> = Vec::new();
    for (remove, expected) in steps {
        removed.extend(remove);
        let vars: Vec<(&str, &str)> = all
            .iter()
            .copied()
            .filter(|(k, _)| !removed.contains(k))
            .collect();
        let session = chain(env(home.path(), &vars))
            .load("eu-west-1")
            .await
            .unwrap();
        assert_eq!(
            session.credentials.access_key_id, expected,
            "without {removed:?}"
        );
    }
    // Each network source was asked only once it was the first one left.
    assert_eq!(sts.requests().len(), 1);
    assert_eq!(container.requests().len(), 1);
    assert_eq!(imds.requests().len(), 3);
}

#[test]
fn refresh_is_five_minutes_before_expiry_or_at_half_life() {
    let now = OffsetDateTime::now_utc();
    let hour = now + time::Duration::hours(1);
    assert_eq!(
        refresh_at(now, Some(hour)),
        hour - time::Duration::minutes(5)
    );
    let short = now + time::Duration::seconds(4);
    assert_eq!(
        refresh_at(now, Some(short)),
        now + time::Duration::seconds(2)
    );
    assert_eq!(refresh_at(now, None), now + time::Duration::minutes(15));
    // Already expired: refresh now.
    let past = now - time::Duration::seconds(1);
    assert_eq!(refresh_at(now, Some(past)), past);
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let home = tempfile::tempdir().unwrap();
    let issued = Arc::new(AtomicUsize::new(0));
    let imds = Fake::start(imds_handler(3600, issued.clone())).await;
    let c = Arc::new(chain(env(
        home.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.base.as_str())],
    )));
    let (log, _) = log();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, log) = (c.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            c.credentials("eu-west-1", &log).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().access_key_id, "ASIAIMDS1");
    }
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    assert_eq!(
        imds.calls().iter().filter(|c| c.starts_with("PUT")).count(),
        1
    );
}

#[tokio::test]
async fn a_failed_refresh_keeps_valid_credentials_until_they_expire() {
    let home = tempfile::tempdir().unwrap();
    let issued = Arc::new(AtomicUsize::new(0));
    let inner = imds_handler(8, issued.clone());
    let broken = Arc::new(Mutex::new(false));
    let flag = broken.clone();
    let imds = Fake::start(Arc::new(move |r: &Recorded| {
        if *flag.lock().unwrap() {
            Reply::Text(500, "metadata service unavailable".into())
        } else {
            inner(r)
        }
    }))
    .await;
    let c = chain(env(
        home.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.base.as_str())],
    ));
    let (log, sink) = log();
    let first = c.credentials("eu-west-1", &log).await.unwrap();
    *broken.lock().unwrap() = true;
    // Past the refresh point (half of at most 8 s, at least 3 s before the expiry).
    tokio::time::sleep(std::time::Duration::from_millis(4_100)).await;
    let kept = c.credentials("eu-west-1", &log).await.unwrap();
    assert_eq!(kept.access_key_id, first.access_key_id);
    let warning = sink
        .lines()
        .into_iter()
        .find(|l| l.contains("warning: refresh aws credentials"));
    assert!(
        warning
            .as_deref()
            .is_some_and(|w| w.contains("http status 500")),
        "{:?}",
        sink.lines()
    );
    // Once expired, the failure is the answer.
    tokio::time::sleep(std::time::Duration::from_millis(4_100)).await;
    let err = c.credentials("eu-west-1", &log).await.unwrap_err();
    assert!(
        matches!(err, ExecError::ApiStatus { status: 500, .. }) && err.is_retryable(),
        "{err:?}"
    );
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    assert_no_secret(&sink, &secret_of("ASIAIMDS1"));
    assert_no_secret(&sink, &token_of("ASIAIMDS1"));
}

// ---------------------------------------------------------------- rotation mid-rollout

/// Checks a recorded ECS request's SigV4 signature with the secret the IMDS fake issued
/// for its access key; returns that key.
fn verified_key(r: &Recorded) -> String {
    verify_signature(r, "ecs", known_secret)
}

#[tokio::test]
async fn credentials_rotating_mid_rollout_are_refreshed_without_failing_the_deploy() {
    let home = tempfile::tempdir().unwrap();
    let issued = Arc::new(AtomicUsize::new(0));
    // Credentials live at most 4 s: refreshed about every 2 s.
    let imds = Fake::start(imds_handler(4, issued.clone())).await;
    // About 45 polls of 100 ms: the rollout spans at least two refreshes.
    let ecs = Fake::start(ecs_handler(Rollout::Completes(45))).await;
    let mut target = ecs_target(&ecs.base);
    if let Connection::Api(ApiConnection::Ecs { credential_ref, .. }) = &mut target.connection {
        *credential_ref = None;
    }
    let exec = ApiExecutor::new(
        Arc::new(crate::testing::FakeSecrets::default()),
        ApiExecutorConfig {
            poll_interval: std::time::Duration::from_millis(100),
            request_timeout: std::time::Duration::from_secs(5),
        },
    )
    .with_aws_environment(env(
        home.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.base.as_str())],
    ));
    let (c, sink) = ctx(30_000);
    let result = exec.deploy(&request(&target, 2), &c).await;
    assert!(result.is_ok(), "{result:?}");

    let keys: Vec<String> = ecs.requests().iter().map(verified_key).collect();
    let mut distinct = keys.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "one key for the whole rollout: {distinct:?}"
    );
    // Keys only move forward: after a refresh the old key is never used again.
    let numbers: Vec<usize> = distinct
        .iter()
        .map(|k| k["ASIAIMDS".len()..].parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{distinct:?}");
    let loads = sink
        .lines()
        .into_iter()
        .filter(|l| l.contains("aws credentials from instance metadata"))
        .count();
    assert_eq!(loads, issued.load(Ordering::SeqCst), "{:?}", sink.lines());
    for n in 1..=issued.load(Ordering::SeqCst) {
        let id = format!("ASIAIMDS{n}");
        assert_no_secret(&sink, &secret_of(&id));
        assert_no_secret(&sink, &token_of(&id));
    }
}

#[tokio::test]
async fn an_ecs_target_without_credentials_anywhere_fails_permanently_naming_the_chain() {
    let home = tempfile::tempdir().unwrap();
    let ecs = Fake::start(ecs_handler(Rollout::Completes(0))).await;
    let mut target = ecs_target(&ecs.base);
    if let Connection::Api(ApiConnection::Ecs { credential_ref, .. }) = &mut target.connection {
        *credential_ref = None;
    }
    let exec = executor(&[])
        .with_aws_environment(env(home.path(), &[("AWS_EC2_METADATA_DISABLED", "true")]));
    let (c, _) = ctx(5_000);
    let result = exec.deploy(&request(&target, 2), &c).await;
    let err = result.unwrap_err().error;
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("aws default chain"), "{err}");
    assert!(
        ecs.requests().is_empty(),
        "nothing unsigned was sent: {:?}",
        ecs.calls()
    );
}

#[tokio::test]
async fn a_session_token_echoed_by_ecs_is_redacted_from_the_error() {
    let home = tempfile::tempdir().unwrap();
    let issued = Arc::new(AtomicUsize::new(0));
    let imds = Fake::start(imds_handler(3600, issued)).await;
    // As some proxies do: the refusal quotes the request headers.
    let ecs = Fake::start(Arc::new(|r: &Recorded| {
        Reply::Text(403, format!("denied; headers {:?}", r.headers))
    }))
    .await;
    let mut target = ecs_target(&ecs.base);
    if let Connection::Api(ApiConnection::Ecs { credential_ref, .. }) = &mut target.connection {
        *credential_ref = None;
    }
    let exec = executor(&[]).with_aws_environment(env(
        home.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.base.as_str())],
    ));
    let (c, sink) = ctx(5_000);
    let result = exec.deploy(&request(&target, 2), &c).await;
    let err = result.unwrap_err().error;
    assert!(
        matches!(err, ExecError::ApiStatus { status: 403, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(crate::REDACTED) && text.contains("ASIAIMDS1"),
        "{text}"
    );
    assert!(!text.contains(&token_of("ASIAIMDS1")), "{text}");
    assert_no_secret(&sink, &token_of("ASIAIMDS1"));
    assert_no_secret(&sink, &secret_of("ASIAIMDS1"));
}

#[tokio::test]
async fn each_ecs_target_can_name_its_own_profile() {
    let home = tempfile::tempdir().unwrap();
    let credentials = home.path().join("credentials");
    write(
        &credentials,
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\
         [team-a]\naws_access_key_id = AKIATEAMA\naws_secret_access_key = a\n\
         [team-b]\naws_access_key_id = AKIATEAMB\naws_secret_access_key = b\n\
         [team-c]\nregion = eu-west-1\n",
    );
    let exec = executor(&[]).with_aws_environment(env(
        home.path(),
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
            ("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT"),
            ("AWS_SECRET_ACCESS_KEY", "e"),
        ],
    ));
    for (profile, expected) in [
        (Some("team-a"), "AKIATEAMA"),
        (Some("team-b"), "AKIATEAMB"),
        // Without a profile of its own, the target gets the whole chain: the
        // environment comes first.
        (None, "AKIAENVIRONMENT"),
        // A profile without keys is an error, not a fall back to the environment.
        (Some("team-c"), ""),
    ] {
        let ecs = Fake::start(ecs_handler(Rollout::Completes(0))).await;
        let mut target = ecs_target(&ecs.base);
        if let Connection::Api(ApiConnection::Ecs {
            credential_ref,
            profile: p,
            ..
        }) = &mut target.connection
        {
            *credential_ref = None;
            *p = profile.map(|p| deploy_core::ResourceName::parse(p).unwrap());
        }
        let (c, _) = ctx(5_000);
        let result = exec.deploy(&request(&target, 2), &c).await;
        if expected.is_empty() {
            let err = result.unwrap_err().error.to_string();
            assert!(err.contains("profile `team-c` has neither"), "{err}");
            assert!(ecs.requests().is_empty());
            continue;
        }
        assert!(result.is_ok(), "{profile:?}: {result:?}");
        for r in ecs.requests() {
            assert!(
                r.header("authorization")
                    .contains(&format!("Credential={expected}/")),
                "{profile:?}: {}",
                r.header("authorization")
            );
        }
    }
}

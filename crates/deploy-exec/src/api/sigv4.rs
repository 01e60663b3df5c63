//! AWS Signature Version 4 (header signing), on sha2 + hmac: enough for the ECS JSON API without the AWS SDK.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest as _, Sha256};

use crate::errors::ExecError;
use crate::secrets::Secret;

/// An access key: parsed from a secret `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`,
/// or handed out by the default chain (`api::aws`). Only the key id is shown by `Debug`.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    secret_access_key: Secret,
    session_token: Option<Secret>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// Keys from a credential source (the default chain).
    pub(crate) fn new(
        access_key_id: &str,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.to_owned(),
            secret_access_key,
            session_token,
        }
    }

    /// Parses `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]` (surrounding whitespace ignored).
    pub fn parse(reference: &str, secret: &Secret) -> Result<Self, ExecError> {
        let text = secret.expose().trim();
        let mut parts = text.splitn(3, ':');
        let (Some(id), Some(key)) = (parts.next(), parts.next()) else {
            return Err(ExecError::Secret {
                reference: reference.to_owned(),
                detail: "expected `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`".into(),
            });
        };
        if id.is_empty() || key.is_empty() {
            return Err(ExecError::Secret {
                reference: reference.to_owned(),
                detail: "expected `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]` with both parts non-empty".into(),
            });
        }
        Ok(Self {
            access_key_id: id.to_owned(),
            secret_access_key: Secret::new(key),
            session_token: parts.next().filter(|t| !t.is_empty()).map(Secret::new),
        })
    }

    /// The session token, sent as `X-Amz-Security-Token` when present.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_ref().map(Secret::expose)
    }
}

/// What is signed: one request.
#[derive(Debug, Clone)]
pub struct SigningInput<'a> {
    pub method: &'a str,
    /// The URI-encoded path, `/` at least.
    pub path: &'a str,
    /// The canonical (sorted, encoded) query string, or empty.
    pub query: &'a str,
    /// Headers to sign (name, value); `host` and `x-amz-date` must be among them.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub region: &'a str,
    pub service: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, the same as the `x-amz-date` header.
    pub amz_date: &'a str,
}

/// The `Authorization` header value for `input`.
pub fn sign(credentials: &AwsCredentials, input: &SigningInput<'_>) -> String {
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), collapse(v)))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method,
        input.path,
        input.query,
        canonical_headers,
        signed_headers,
        hex(&Sha256::digest(input.body))
    );
    let date = input.amz_date.get(..8).unwrap_or(input.amz_date);
    let scope = format!("{date}/{}/{}/aws4_request", input.region, input.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        input.amz_date,
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let key = signing_key(
        credentials.secret_access_key.expose(),
        date,
        input.region,
        input.service,
    );
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    )
}

/// The derived signing key of one day, region and service.
pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Trims and collapses runs of spaces, as the canonical header form wants.
fn collapse(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Lowercase hex (the workspace's one spelling).
pub(crate) use deploy_core::hex::lower_hex as hex;

/// `YYYYMMDDTHHMMSSZ` for now (UTC).
pub(crate) fn amz_date_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from the AWS documentation's worked example ("Create a signed AWS API
    // request": IAM ListUsers, 20150830T123600Z, us-east-1).
    const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    #[test]
    fn signing_key_matches_the_aws_example() {
        assert_eq!(
            hex(&signing_key(EXAMPLE_SECRET, "20150830", "us-east-1", "iam")),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    #[test]
    fn signature_matches_the_aws_example() {
        let creds = AwsCredentials::parse(
            "env:X",
            &Secret::new(format!("AKIDEXAMPLE:{EXAMPLE_SECRET}")),
        )
        .unwrap();
        let auth = sign(
            &creds,
            &SigningInput {
                method: "GET",
                path: "/",
                query: "Action=ListUsers&Version=2010-05-08",
                headers: &[
                    (
                        "Content-Type",
                        "application/x-www-form-urlencoded; charset=utf-8",
                    ),
                    ("Host", "iam.amazonaws.com"),
                    ("X-Amz-Date", "20150830T123600Z"),
                ],
                body: b"",
                region: "us-east-1",
                service: "iam",
                amz_date: "20150830T123600Z",
            },
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
        assert!(!format!("{creds:?}").contains(EXAMPLE_SECRET));
    }

    #[test]
    fn credentials_need_both_parts() {
        assert!(AwsCredentials::parse("env:X", &Secret::new("onlyone")).is_err());
        assert!(AwsCredentials::parse("env:X", &Secret::new(":k")).is_err());
        let c = AwsCredentials::parse("env:X", &Secret::new("a:b:tok\n")).unwrap();
        assert_eq!(c.session_token(), Some("tok"));
        let err = AwsCredentials::parse("env:X", &Secret::new("nocolon")).unwrap_err();
        assert!(!err.is_retryable());
    }
}

//! The EC2 instance metadata source, IMDSv2 only: a PUT for a session token, then the role name and its JSON credentials, each GET carrying the token.

use reqwest::{Method, Url};

use super::source::{
    LOCAL_TIMEOUT, Outcome, Sources, json_session, redact, send, status_error, tail,
};
use crate::errors::ExecError;

const IMDS_V4: &str = "http://169.254.169.254";
const IMDS_V6: &str = "http://[fd00:ec2::254]";
/// The IMDSv2 session token lifetime asked for (the maximum, six hours).
const IMDS_TOKEN_TTL: &str = "21600";

impl Sources<'_> {
    pub(super) async fn instance_metadata(&self) -> Result<Outcome, ExecError> {
        if self
            .env
            .var("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Ok(Outcome::Absent("AWS_EC2_METADATA_DISABLED is true".into()));
        }
        let base = match self.env.var("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
            Some(e) => e.trim_end_matches('/').to_owned(),
            None if self
                .env
                .var("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
                .is_some_and(|m| m.eq_ignore_ascii_case("ipv6")) =>
            {
                IMDS_V6.to_owned()
            }
            None => IMDS_V4.to_owned(),
        };
        Url::parse(&base).map_err(|_| {
            ExecError::invalid(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                base.clone(),
                "an absolute http URL",
            )
        })?;
        let platform = "instance-metadata";
        // Unreachable means "not on EC2" far more often than a transient fault: the
        // chain reports it with the other sources' reasons instead of failing here.
        let reach = |e: ExecError| Outcome::Absent(format!("{base}: {e}"));
        let request = self
            .local
            .request(Method::PUT, format!("{base}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL)
            .timeout(LOCAL_TIMEOUT);
        let (status, token) = match send(request, platform, "GetToken", &base).await {
            Ok(answer) => answer,
            Err(e) => return Ok(reach(e)),
        };
        if !(200..300).contains(&status) {
            return Err(status_error(
                platform,
                "GetToken (IMDSv2)",
                &base,
                status,
                tail(&token),
            ));
        }
        let token = token.trim().to_owned();
        let hide = [token.as_str()];
        let list = format!("{base}/latest/meta-data/iam/security-credentials/");
        let get = |url: String| {
            self.local
                .get(url)
                .header("x-aws-ec2-metadata-token", token.as_str())
                .timeout(LOCAL_TIMEOUT)
        };
        let (status, roles) = send(get(list), platform, "ListRoles", &base).await?;
        if status == 404 {
            return Ok(Outcome::Absent(format!(
                "{base}: no instance profile is attached"
            )));
        }
        if !(200..300).contains(&status) {
            return Err(status_error(
                platform,
                "ListRoles",
                &base,
                status,
                redact(&tail(&roles), &hide),
            ));
        }
        let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
            return Ok(Outcome::Absent(format!(
                "{base}: no instance profile is attached"
            )));
        };
        let url = format!("{base}/latest/meta-data/iam/security-credentials/{role}");
        let (status, text) = send(get(url), platform, "GetRoleCredentials", &base).await?;
        if !(200..300).contains(&status) {
            return Err(status_error(
                platform,
                "GetRoleCredentials",
                &base,
                status,
                redact(&tail(&text), &hide),
            ));
        }
        let reference = format!("aws instance role {role}");
        let session = json_session(
            &text,
            &reference,
            format!("instance metadata (role `{role}`)"),
        )?;
        Ok(Outcome::Loaded(session))
    }
}

//! The container credentials source (ECS task role, EKS Pod Identity): a GET with the `Authorization` token, a JSON answer; plain http only to loopback and the agent addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

use super::source::{
    LOCAL_TIMEOUT, Outcome, Sources, json_session, redact, secret_error, send, status_error, tail,
};
use crate::errors::ExecError;

/// The ECS agent's credentials address (for `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`).
const ECS_CONTAINER_HOST: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
/// EKS Pod Identity's agent addresses, allowed over plain http like loopback.
const EKS_POD_IDENTITY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);
const EKS_POD_IDENTITY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23);

impl Sources<'_> {
    pub(super) async fn container(&self) -> Result<Outcome, ExecError> {
        let reference = "aws container credentials";
        let url = if let Some(relative) = self.env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            let joined = format!("http://{ECS_CONTAINER_HOST}{relative}");
            if !relative.starts_with('/') {
                return Err(ExecError::invalid(
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    relative,
                    "a path starting with `/`",
                ));
            }
            Url::parse(&joined).map_err(|_| {
                ExecError::invalid(
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    relative,
                    "a URL path",
                )
            })?
        } else if let Some(full) = self.env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            full_uri(full)?
        } else {
            return Ok(Outcome::Absent(
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI unset".into(),
            ));
        };
        // The token file wins over the variable, and is read at every refresh (EKS Pod
        // Identity rotates it).
        let token = match (
            self.env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            self.env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ) {
            (Some(file), _) => {
                let path = self.env.expand(file);
                let t = tokio::fs::read_to_string(&path).await.map_err(|e| {
                    secret_error(
                        reference,
                        format!(
                            "read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                Some(t.trim().to_owned())
            }
            (None, Some(t)) => Some(t.to_owned()),
            (None, None) => None,
        };
        let mut request = self.local.get(url.clone()).timeout(LOCAL_TIMEOUT);
        if let Some(t) = &token {
            if t.contains(['\r', '\n']) {
                return Err(secret_error(
                    reference,
                    "the authorization token contains a line break",
                ));
            }
            request = request.header("authorization", t.as_str());
        }
        let hide = [token.as_deref().unwrap_or_default()];
        let resource = url.as_str();
        let (status, text) =
            send(request, "container-credentials", "GetCredentials", resource).await?;
        if !(200..300).contains(&status) {
            return Err(status_error(
                "container-credentials",
                "GetCredentials",
                resource,
                status,
                redact(&tail(&text), &hide),
            ));
        }
        let session = json_session(
            &text,
            reference,
            format!("container credentials ({resource})"),
        )?;
        Ok(Outcome::Loaded(session))
    }
}

/// `AWS_CONTAINER_CREDENTIALS_FULL_URI`: https anywhere; plain http only to loopback
/// or the ECS / EKS Pod Identity agent addresses, as the AWS SDKs allow.
pub(crate) fn full_uri(value: &str) -> Result<Url, ExecError> {
    let var = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
    let url = Url::parse(value).map_err(|_| ExecError::invalid(var, value, "an absolute URL"))?;
    let allowed = match url.scheme() {
        "https" => true,
        "http" => match url.host_str() {
            Some(h) if h.eq_ignore_ascii_case("localhost") => true,
            Some(h) => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| match ip {
                    IpAddr::V4(ip) => {
                        ip.is_loopback() || ip == ECS_CONTAINER_HOST || ip == EKS_POD_IDENTITY_V4
                    }
                    IpAddr::V6(ip) => ip.is_loopback() || ip == EKS_POD_IDENTITY_V6,
                }),
            None => false,
        },
        _ => false,
    };
    if allowed {
        Ok(url)
    } else {
        Err(ExecError::invalid(
            var,
            value,
            "https, or http to a loopback address, 169.254.170.2 (ECS) or 169.254.170.23 / [fd00:ec2::23] (EKS Pod Identity)",
        ))
    }
}

//! The shared-profile source: static keys, or a `role_arn` assumed over a `source_profile` chain, a `credential_source` or a `web_identity_token_file`.

use std::collections::BTreeSet;

use super::profile::{Files, Keys, Selected, select};
use super::source::{Outcome, Session, Sources, secret_error};
use super::sts::{RoleRequest, session_name};
use crate::api::sigv4::AwsCredentials;
use crate::errors::ExecError;
use crate::secrets::Secret;

/// Profile settings that need a mechanism deployd does not have (a helper process, an
/// SSO login, an MFA prompt). Refused by name: falling through to the next source would
/// deploy with other rights than the profile asks for.
const UNSUPPORTED: &[&str] = &[
    "credential_process",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "mfa_serial",
];

/// Where the first credentials of a profile chain come from.
#[derive(Debug)]
enum Base {
    /// `aws_access_key_id` / `aws_secret_access_key` of this profile.
    Static { profile: String, keys: Keys },
    /// `credential_source`: Environment, Ec2InstanceMetadata or EcsContainer.
    CredentialSource { profile: String, value: String },
    /// `web_identity_token_file` + `role_arn` of this profile.
    WebIdentity { profile: String, keys: Keys },
}

/// The roles to assume, innermost first reversed: `roles[0]` is the selected profile.
#[derive(Debug)]
struct Plan {
    base: Base,
    roles: Vec<(String, Keys)>,
}

fn get<'k>(keys: &'k Keys, name: &str) -> Option<&'k str> {
    keys.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// Follows `source_profile` links from `top` to the profile that holds the base
/// credentials. `None`: the selected profile has no credentials settings at all.
fn plan(files: &Files, top: &str, top_keys: Keys) -> Result<Option<Plan>, ExecError> {
    let mut name = top.to_owned();
    let mut keys = top_keys;
    let mut seen = BTreeSet::new();
    let mut roles: Vec<(String, Keys)> = Vec::new();
    loop {
        let reference = format!("aws profile {name}");
        if let Some(key) = UNSUPPORTED.iter().find(|k| get(&keys, k).is_some()) {
            return Err(secret_error(
                reference,
                format!(
                    "the profile sets `{key}`, which deployd does not support: expected static \
                     keys, or role_arn with source_profile, credential_source or \
                     web_identity_token_file"
                ),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(secret_error(
                reference,
                format!("source_profile links form a loop back to profile `{name}`"),
            ));
        }
        let Some(_) = get(&keys, "role_arn") else {
            if get(&keys, "aws_access_key_id").is_some() {
                return Ok(Some(Plan {
                    base: Base::Static {
                        profile: name,
                        keys,
                    },
                    roles,
                }));
            }
            if roles.is_empty() {
                return Ok(None);
            }
            return Err(secret_error(
                reference,
                "the profile is a source_profile but has neither aws_access_key_id nor role_arn",
            ));
        };
        if let Some(source) = get(&keys, "source_profile").map(str::to_owned) {
            roles.push((name.clone(), keys.clone()));
            // A profile naming itself uses its own static keys as the source.
            if source == name {
                return Ok(Some(Plan {
                    base: Base::Static {
                        profile: name,
                        keys,
                    },
                    roles,
                }));
            }
            keys = files.get(&source).ok_or_else(|| {
                secret_error(
                    &reference,
                    format!("source_profile `{source}` is not in {}", files.describe()),
                )
            })?;
            name = source;
            continue;
        }
        if let Some(value) = get(&keys, "credential_source").map(str::to_owned) {
            roles.push((name.clone(), keys));
            return Ok(Some(Plan {
                base: Base::CredentialSource {
                    profile: name,
                    value,
                },
                roles,
            }));
        }
        if get(&keys, "web_identity_token_file").is_some() {
            // The web identity call assumes this profile's role itself.
            return Ok(Some(Plan {
                base: Base::WebIdentity {
                    profile: name,
                    keys,
                },
                roles,
            }));
        }
        return Err(secret_error(
            reference,
            "the profile sets role_arn but none of source_profile, credential_source, \
             web_identity_token_file",
        ));
    }
}

/// The parameters of the AssumeRole* call for one profile's `role_arn`.
fn role_request<'k>(keys: &'k Keys, fallback_region: Option<&'k str>) -> RoleRequest<'k> {
    RoleRequest {
        role_arn: get(keys, "role_arn").unwrap_or_default(),
        session_name: session_name(get(keys, "role_session_name")),
        region: get(keys, "region").or(fallback_region),
        external_id: get(keys, "external_id"),
        duration_seconds: get(keys, "duration_seconds"),
    }
}

impl Sources<'_> {
    /// The profile source: `AWS_PROFILE` (else `default`) from the shared files.
    pub(super) async fn profile(&self) -> Result<Outcome, ExecError> {
        let files = Files::load(self.env)?;
        let (top, keys) = match select(self.env, &files)? {
            Selected::Found { name, keys } => (name, keys),
            Selected::Absent(why) => return Ok(Outcome::Absent(why)),
        };
        let top_region = get(&keys, "region").map(str::to_owned);
        let Some(plan) = plan(&files, &top, keys)? else {
            return Ok(Outcome::Absent(format!(
                "profile `{top}` has neither aws_access_key_id nor role_arn"
            )));
        };
        let (mut session, via) = self.base(plan.base, top_region.as_deref()).await?;
        let mut described = via;
        for (profile, keys) in plan.roles.iter().rev() {
            let request = role_request(keys, top_region.as_deref());
            session = self
                .assume_role(&session.credentials, &request)
                .await
                .map_err(|e| match e {
                    ExecError::Secret { reference, detail } => ExecError::Secret {
                        reference,
                        detail: format!("{detail} (profile `{profile}`)"),
                    },
                    other => other,
                })?;
            described = format!("role `{}` over {described}", request.role_arn);
        }
        session.source = format!("profile `{top}`: {described}");
        Ok(Outcome::Loaded(session))
    }

    /// The first credentials of a plan and how they were obtained.
    async fn base(
        &self,
        base: Base,
        top_region: Option<&str>,
    ) -> Result<(Session, String), ExecError> {
        match base {
            Base::Static { profile, keys } => {
                let reference = format!("aws profile {profile}");
                let id = get(&keys, "aws_access_key_id").unwrap_or_default();
                let secret = get(&keys, "aws_secret_access_key").ok_or_else(|| {
                    secret_error(
                        &reference,
                        "the profile has aws_access_key_id but no aws_secret_access_key",
                    )
                })?;
                let session = Session {
                    credentials: AwsCredentials::new(
                        id,
                        Secret::new(secret),
                        get(&keys, "aws_session_token").map(Secret::new),
                    ),
                    expires: None,
                    source: format!("profile `{profile}`"),
                };
                Ok((session, format!("static keys of profile `{profile}`")))
            }
            Base::CredentialSource { profile, value } => {
                let outcome = match value.as_str() {
                    "Environment" => self.environment()?,
                    "Ec2InstanceMetadata" => self.instance_metadata().await?,
                    "EcsContainer" => self.container().await?,
                    other => {
                        return Err(ExecError::invalid(
                            format!("credential_source of aws profile `{profile}`"),
                            other,
                            "Environment, Ec2InstanceMetadata or EcsContainer",
                        ));
                    }
                };
                match outcome {
                    Outcome::Loaded(session) => {
                        let via = session.source.clone();
                        Ok((session, via))
                    }
                    Outcome::Absent(why) => Err(secret_error(
                        format!("aws profile {profile}"),
                        format!("credential_source {value} has no credentials: {why}"),
                    )),
                }
            }
            Base::WebIdentity { profile, keys } => {
                let request = role_request(&keys, top_region);
                let file = get(&keys, "web_identity_token_file").unwrap_or_default();
                let session = self
                    .assume_role_with_web_identity(&request, &self.env.expand(file))
                    .await?;
                let via = format!("web identity of profile `{profile}`");
                Ok((session, via))
            }
        }
    }
}

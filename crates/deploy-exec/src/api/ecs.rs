//! AWS ECS: DescribeServices -> DescribeTaskDefinition -> RegisterTaskDefinition (one image changed) -> UpdateService -> wait for the PRIMARY deployment.

use deploy_core::{ApiConnection, ResourceName};
use reqwest::Url;
use serde_json::{Map, Value, json};

use std::sync::Arc;

use super::aws::{AwsChain, AwsChains};
use super::executor::{Call, Rolled, named_image};
use super::http::host_of;
use super::sigv4::{AwsCredentials, SigningInput, amz_date_now, sign};
use crate::errors::ExecError;

const PLATFORM: &str = "ecs";
const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Task definition fields RegisterTaskDefinition accepts; read-only ones
/// (`taskDefinitionArn`, `revision`, `status`, `registeredAt`, ...) are left out.
const REGISTER_FIELDS: &[&str] = &[
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
];

struct Ecs<'a> {
    call: &'a Call,
    url: Url,
    host_header: String,
    region: &'a str,
    cluster: &'a str,
    service: &'a str,
    container: &'a str,
    credentials: Keys,
    resource: String,
}

/// Where the signing keys come from: the target's `credential_ref`, or the default
/// chain, asked before every request so keys rotated mid-rollout are picked up.
enum Keys {
    Static(AwsCredentials),
    Chain(Arc<AwsChain>),
}

impl<'a> Ecs<'a> {
    fn new(
        call: &'a Call,
        chains: &'a AwsChains,
        api: &'a ApiConnection,
    ) -> Result<Self, ExecError> {
        let ApiConnection::Ecs {
            endpoint,
            region,
            cluster,
            service,
            container,
            profile,
            ..
        } = api
        else {
            return Err(ExecError::invalid(
                "ecs connection",
                "another platform",
                "ecs",
            ));
        };
        let base = match endpoint {
            Some(e) => e.as_str().to_owned(),
            None => format!("https://ecs.{region}.amazonaws.com/"),
        };
        let url = Url::parse(&base).map_err(|e| {
            ExecError::invalid(
                "ecs endpoint",
                base.clone(),
                format!("an absolute URL ({e})"),
            )
        })?;
        let host_header = match url.port() {
            Some(p) => format!("{}:{p}", host_of(&url)),
            None => host_of(&url),
        };
        let credentials = match (call.reference.as_deref(), call.secret.as_ref()) {
            (Some(reference), Some(secret)) => {
                Keys::Static(AwsCredentials::parse(reference, secret)?)
            }
            _ => Keys::Chain(chains.for_profile(profile.as_ref().map(ResourceName::as_str))),
        };
        Ok(Self {
            call,
            url,
            host_header,
            region: region.as_str(),
            cluster: cluster.as_str(),
            service: service.as_str(),
            container: container.as_str(),
            credentials,
            resource: format!("{cluster}/{service}"),
        })
    }

    /// One signed JSON-RPC call.
    async fn rpc(&self, action: &str, body: &Value) -> Result<Value, ExecError> {
        let credentials = match &self.credentials {
            Keys::Static(c) => c.clone(),
            Keys::Chain(chain) => chain.credentials(self.region, self.call.log()).await?,
        };
        let payload = body.to_string();
        let amz_date = amz_date_now();
        let target = format!("{TARGET_PREFIX}.{action}");
        let mut headers = vec![
            ("content-type", CONTENT_TYPE),
            ("host", self.host_header.as_str()),
            ("x-amz-date", amz_date.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        if let Some(token) = credentials.session_token() {
            headers.push(("x-amz-security-token", token));
        }
        let authorization = sign(
            &credentials,
            &SigningInput {
                method: "POST",
                path: self.url.path(),
                query: "",
                headers: &headers,
                body: payload.as_bytes(),
                region: self.region,
                service: "ecs",
                amz_date: &amz_date,
            },
        );
        let mut request = self
            .call
            .http
            .client()
            .post(self.url.clone())
            .header("authorization", authorization)
            .body(payload);
        for (name, value) in headers.iter().filter(|(n, _)| *n != "host") {
            request = request.header(*name, *value);
        }
        let answer = self.call.http.send(request, action, &self.resource).await;
        // The call's log redacts only the `credential_ref` secret; a session token from
        // the chain, echoed back in an error body, is removed here.
        match credentials.session_token() {
            Some(token) => answer.map_err(|e| scrub(e, token)),
            None => answer,
        }
    }

    fn unexpected(&self, expected: impl Into<String>) -> ExecError {
        ExecError::ApiResponse {
            platform: PLATFORM,
            resource: self.resource.clone(),
            expected: expected.into(),
        }
    }

    async fn describe_service(&self) -> Result<Value, ExecError> {
        let answer = self
            .rpc(
                "DescribeServices",
                &json!({"cluster": self.cluster, "services": [self.service]}),
            )
            .await?;
        let found = answer["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["serviceName"] == self.service).cloned());
        found.ok_or_else(|| {
            let reason = answer["failures"][0]["reason"]
                .as_str()
                .unwrap_or("no such service");
            self.unexpected(format!(
                "service `{}` in cluster `{}` ({reason})",
                self.service, self.cluster
            ))
        })
    }

    async fn describe_task_definition(&self, arn: &str) -> Result<Value, ExecError> {
        let answer = self
            .rpc("DescribeTaskDefinition", &json!({"taskDefinition": arn}))
            .await?;
        match &answer["taskDefinition"] {
            Value::Object(_) => Ok(answer["taskDefinition"].clone()),
            _ => Err(self.unexpected(format!("task definition `{arn}`"))),
        }
    }

    /// The service's task definition ARN and its definition.
    async fn current(&self) -> Result<(String, Value), ExecError> {
        let service = self.describe_service().await?;
        let arn = service["taskDefinition"]
            .as_str()
            .ok_or_else(|| self.unexpected("a taskDefinition on the service"))?
            .to_owned();
        let definition = self.describe_task_definition(&arn).await?;
        Ok((arn, definition))
    }

    fn container_image(&self, definition: &Value) -> Result<String, ExecError> {
        let containers = definition["containerDefinitions"]
            .as_array()
            .ok_or_else(|| self.unexpected("containerDefinitions in the task definition"))?;
        named_image(containers, self.container).map_err(|e| self.unexpected(e))
    }

    /// The register request: the current definition's writable fields, only our container's image changed.
    fn register_body(&self, definition: &Value, image: &str) -> Value {
        let mut body = Map::new();
        for field in REGISTER_FIELDS {
            if let Some(v) = definition.get(*field).filter(|v| !v.is_null()) {
                body.insert((*field).to_owned(), v.clone());
            }
        }
        if let Some(Value::Array(containers)) = body.get_mut("containerDefinitions") {
            for c in containers
                .iter_mut()
                .filter(|c| c["name"] == self.container)
            {
                c["image"] = Value::String(image.to_owned());
            }
        }
        Value::Object(body)
    }

    /// Waits until the PRIMARY deployment runs `arn` with rolloutState COMPLETED.
    async fn wait(&self, arn: &str, image: &str) -> Result<(), ExecError> {
        loop {
            let service = self.describe_service().await?;
            let deployments = service["deployments"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let primary = deployments.iter().find(|d| d["status"] == "PRIMARY");
            let state = match primary {
                None => "no PRIMARY deployment".to_owned(),
                Some(d) if d["taskDefinition"] != arn => format!(
                    "PRIMARY deployment runs {}",
                    d["taskDefinition"].as_str().unwrap_or("?")
                ),
                Some(d) => {
                    let counts = format!(
                        "running {}/{}",
                        d["runningCount"].as_i64().unwrap_or(0),
                        d["desiredCount"].as_i64().unwrap_or(0)
                    );
                    match d["rolloutState"].as_str() {
                        Some("COMPLETED") => return Ok(()),
                        Some("FAILED") => {
                            return Err(ExecError::RolloutFailed {
                                platform: PLATFORM,
                                resource: self.resource.clone(),
                                image: image.to_owned(),
                                detail: format!(
                                    "the PRIMARY deployment's rolloutState is FAILED: {}",
                                    d["rolloutStateReason"]
                                        .as_str()
                                        .unwrap_or("no reason given")
                                ),
                            });
                        }
                        Some(other) => format!("rolloutState {other}, {counts}"),
                        // Without rolloutState (older API answers): stable like
                        // `aws ecs wait services-stable`, one deployment, all running.
                        None if deployments.len() == 1
                            && d["runningCount"] == d["desiredCount"] =>
                        {
                            return Ok(());
                        }
                        None => format!(
                            "no rolloutState, {} deployments, {counts}",
                            deployments.len()
                        ),
                    }
                }
            };
            self.call
                .log()
                .line(&format!("ecs `{}`: {state}", self.resource));
            self.call.pause(&state).await;
        }
    }
}

/// The image of the named container in the service's current task definition.
pub(crate) async fn current_image(
    call: &Call,
    chains: &AwsChains,
    api: &ApiConnection,
) -> Result<String, ExecError> {
    let ecs = Ecs::new(call, chains, api)?;
    let (_, definition) = ecs.current().await?;
    ecs.container_image(&definition)
}

/// Rolls the service's container to `image` and waits for the rollout.
pub(crate) async fn deploy(
    call: &Call,
    chains: &AwsChains,
    api: &ApiConnection,
    image: &str,
) -> Result<Rolled, ExecError> {
    let ecs = Ecs::new(call, chains, api)?;
    let (arn, definition) = ecs.current().await?;
    let previous = ecs.container_image(&definition)?;
    call.saw_previous(&previous);
    let changed = previous != image;
    let target_arn = if changed {
        let answer = ecs
            .rpc(
                "RegisterTaskDefinition",
                &ecs.register_body(&definition, image),
            )
            .await?;
        let new_arn = answer["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .ok_or_else(|| {
                ecs.unexpected("taskDefinition.taskDefinitionArn from RegisterTaskDefinition")
            })?
            .to_owned();
        call.log().line(&format!(
            "ecs `{}`: registered {new_arn} with `{image}`",
            ecs.resource
        ));
        ecs.rpc(
            "UpdateService",
            &json!({"cluster": ecs.cluster, "service": ecs.service, "taskDefinition": new_arn}),
        )
        .await?;
        call.log().line(&format!(
            "ecs `{}`: service updated to {new_arn}",
            ecs.resource
        ));
        new_arn
    } else {
        arn
    };
    ecs.wait(&target_arn, image).await?;
    Ok(Rolled { previous, changed })
}

/// `e` with `token` replaced wherever an HTTP answer's text was copied into it.
fn scrub(e: ExecError, token: &str) -> ExecError {
    let clean = |text: String| text.replace(token, crate::REDACTED);
    match e {
        ExecError::ApiStatus {
            platform,
            action,
            resource,
            status,
            detail,
        } => ExecError::ApiStatus {
            platform,
            action,
            resource,
            status,
            detail: clean(detail),
        },
        ExecError::ApiConflict {
            platform,
            action,
            resource,
            detail,
        } => ExecError::ApiConflict {
            platform,
            action,
            resource,
            detail: clean(detail),
        },
        ExecError::Connect { host, port, detail } => ExecError::Connect {
            host,
            port,
            detail: clean(detail),
        },
        ExecError::TlsCertificate { host, port, detail } => ExecError::TlsCertificate {
            host,
            port,
            detail: clean(detail),
        },
        other => other,
    }
}

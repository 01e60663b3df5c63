//! Kubernetes: strategic-merge PATCH of one Deployment container's image, then wait like `kubectl rollout status`.

use deploy_core::ApiConnection;
use serde_json::{Value, json};

use super::executor::{Call, Rolled, named_image};
use super::http::base_url;
use super::kube_auth::KubeAccess;
use crate::errors::ExecError;

const PLATFORM: &str = "kubernetes";
const STRATEGIC_MERGE: &str = "application/strategic-merge-patch+json";

struct Kube<'a> {
    call: &'a Call,
    access: &'a KubeAccess,
    url: String,
    container: &'a str,
    resource: String,
}

impl<'a> Kube<'a> {
    fn new(call: &'a Call, api: &'a ApiConnection) -> Result<Self, ExecError> {
        let ApiConnection::Kubernetes {
            namespace,
            deployment,
            container,
            ..
        } = api
        else {
            return Err(ExecError::invalid(
                "kubernetes connection",
                "another platform",
                "kubernetes",
            ));
        };
        let access = call.kube.as_ref().ok_or_else(|| {
            ExecError::invalid(
                "kubernetes call",
                "no resolved credentials",
                "a call made by the api executor",
            )
        })?;
        Ok(Self {
            call,
            access,
            url: format!(
                "{}/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}",
                base_url(PLATFORM, &access.server)?
            ),
            container: container.as_str(),
            resource: format!("{namespace}/{deployment}"),
        })
    }

    /// Sends one request; after a 401 with a token read from a file, reads the file
    /// again and retries once (the kubelet may have rotated it since the last read).
    async fn send(
        &self,
        method: reqwest::Method,
        patch: Option<&str>,
        action: &str,
    ) -> Result<Value, ExecError> {
        match self.send_once(method.clone(), patch, action).await {
            Err(ExecError::ApiStatus { status: 401, .. }) if self.access.token.rotates() => {
                self.call.log().line(&format!(
                    "kubernetes `{}`: {action} answered 401; reading the token file again",
                    self.resource
                ));
                self.send_once(method, patch, action).await
            }
            other => other,
        }
    }

    async fn send_once(
        &self,
        method: reqwest::Method,
        patch: Option<&str>,
        action: &str,
    ) -> Result<Value, ExecError> {
        let mut r = self.call.http.client().request(method, &self.url);
        // Read before every request: a rotated token file is picked up mid-rollout.
        if let Some(token) = self.access.token.current().await? {
            self.call.http.also_redact(token.expose());
            r = r.bearer_auth(token.expose());
        }
        if let Some(body) = patch {
            r = r
                .header("content-type", STRATEGIC_MERGE)
                .body(body.to_owned());
        }
        self.call.http.send(r, action, &self.resource).await
    }

    fn unexpected(&self, expected: impl Into<String>) -> ExecError {
        ExecError::ApiResponse {
            platform: PLATFORM,
            resource: self.resource.clone(),
            expected: expected.into(),
        }
    }

    async fn get(&self) -> Result<Value, ExecError> {
        let d = self
            .send(reqwest::Method::GET, None, "read deployment")
            .await?;
        if d.is_object() {
            Ok(d)
        } else {
            Err(self.unexpected("a Deployment object"))
        }
    }

    fn image(&self, deployment: &Value) -> Result<String, ExecError> {
        let containers = deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .ok_or_else(|| self.unexpected("spec.template.spec.containers"))?;
        named_image(containers, self.container).map_err(|e| self.unexpected(e))
    }

    /// Waits for `generation` to be observed and fully rolled out (`kubectl rollout status`).
    async fn wait(&self, generation: i64, image: &str) -> Result<(), ExecError> {
        loop {
            let d = self.get().await?;
            let status = &d["status"];
            let observed = status["observedGeneration"].as_i64().unwrap_or(0);
            let progress_deadline = status["conditions"].as_array().and_then(|cs| {
                cs.iter().find(|c| {
                    c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded"
                })
            });
            let state = if observed < generation {
                format!("waiting for generation {generation} to be observed (observed {observed})")
            } else if let Some(c) = progress_deadline {
                return Err(ExecError::RolloutFailed {
                    platform: PLATFORM,
                    resource: self.resource.clone(),
                    image: image.to_owned(),
                    detail: format!(
                        "ProgressDeadlineExceeded: {}",
                        c["message"].as_str().unwrap_or("no message")
                    ),
                });
            } else {
                let wanted = d["spec"]["replicas"].as_i64().unwrap_or(1);
                let replicas = status["replicas"].as_i64().unwrap_or(0);
                let updated = status["updatedReplicas"].as_i64().unwrap_or(0);
                let available = status["availableReplicas"].as_i64().unwrap_or(0);
                if updated < wanted {
                    format!("{updated} of {wanted} new replicas have been updated")
                } else if replicas > updated {
                    format!(
                        "{} old replicas are pending termination",
                        replicas - updated
                    )
                } else if available < updated {
                    format!("{available} of {updated} updated replicas are available")
                } else {
                    return Ok(());
                }
            };
            self.call
                .log()
                .line(&format!("kubernetes `{}`: {state}", self.resource));
            self.call.pause(&state).await;
        }
    }
}

/// The image of the named container.
pub(crate) async fn current_image(call: &Call, api: &ApiConnection) -> Result<String, ExecError> {
    let kube = Kube::new(call, api)?;
    let d = kube.get().await?;
    kube.image(&d)
}

/// Patches the container's image (guarded by resourceVersion when the server has one) and waits.
pub(crate) async fn deploy(
    call: &Call,
    api: &ApiConnection,
    image: &str,
) -> Result<Rolled, ExecError> {
    let kube = Kube::new(call, api)?;
    let d = kube.get().await?;
    let previous = kube.image(&d)?;
    call.saw_previous(&previous);
    let changed = previous != image;
    let generation = if changed {
        let mut patch = json!({
            "spec": {"template": {"spec": {"containers": [{"name": kube.container, "image": image}]}}}
        });
        // With the resourceVersion we read, a concurrent change makes the server answer 409.
        if let Some(rv) = d["metadata"]["resourceVersion"].as_str() {
            patch["metadata"] = json!({"resourceVersion": rv});
        }
        let patched = kube
            .send(
                reqwest::Method::PATCH,
                Some(&patch.to_string()),
                "patch deployment",
            )
            .await?;
        call.log().line(&format!(
            "kubernetes `{}`: container `{}` patched to `{image}`",
            kube.resource, kube.container
        ));
        patched["metadata"]["generation"].as_i64().unwrap_or(0)
    } else {
        d["metadata"]["generation"].as_i64().unwrap_or(0)
    };
    kube.wait(generation, image).await?;
    Ok(Rolled { previous, changed })
}

//! HashiCorp Nomad: read the job, change one task's image, register with EnforceIndex, follow (and promote) the job's deployment.

use deploy_core::ApiConnection;
use serde_json::{Value, json};

use super::executor::{Call, Rolled};
use super::http::base_url;
use crate::errors::ExecError;

const PLATFORM: &str = "nomad";

struct Nomad<'a> {
    call: &'a Call,
    base: String,
    /// `?namespace=..&region=..` or empty (resource names need no escaping).
    query: String,
    job: &'a str,
    group: &'a str,
    task: &'a str,
    resource: String,
}

impl<'a> Nomad<'a> {
    fn new(call: &'a Call, api: &'a ApiConnection) -> Result<Self, ExecError> {
        let ApiConnection::Nomad {
            address,
            namespace,
            region,
            job,
            task_group,
            task,
            ..
        } = api
        else {
            return Err(ExecError::invalid(
                "nomad connection",
                "another platform",
                "nomad",
            ));
        };
        let params: Vec<String> = [("namespace", namespace), ("region", region)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        Ok(Self {
            call,
            base: base_url(PLATFORM, address.as_str())?,
            query,
            job: job.as_str(),
            group: task_group.as_str(),
            task: task.as_str(),
            resource: job.to_string(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .call
            .http
            .client()
            .request(method, format!("{}{path}{}", self.base, self.query));
        if let Some(token) = &self.call.secret {
            r = r.header("X-Nomad-Token", token.expose().trim());
        }
        r
    }

    fn unexpected(&self, expected: impl Into<String>) -> ExecError {
        ExecError::ApiResponse {
            platform: PLATFORM,
            resource: self.resource.clone(),
            expected: expected.into(),
        }
    }

    async fn read_job(&self) -> Result<Value, ExecError> {
        let job = self
            .call
            .http
            .send(
                self.request(reqwest::Method::GET, &format!("/v1/job/{}", self.job)),
                "read",
                &self.resource,
            )
            .await?;
        if job.is_object() {
            Ok(job)
        } else {
            Err(self.unexpected("a job object from GET /v1/job/:id"))
        }
    }

    /// The task's `Config.image`, mutably.
    fn image_slot<'j>(&self, job: &'j mut Value) -> Result<&'j mut Value, ExecError> {
        let group = job["TaskGroups"]
            .as_array_mut()
            .and_then(|g| g.iter_mut().find(|g| g["Name"] == self.group))
            .ok_or_else(|| self.unexpected(format!("a task group named `{}`", self.group)))?;
        let task = group["Tasks"]
            .as_array_mut()
            .and_then(|t| t.iter_mut().find(|t| t["Name"] == self.task))
            .ok_or_else(|| {
                self.unexpected(format!(
                    "a task named `{}` in task group `{}`",
                    self.task, self.group
                ))
            })?;
        match task.get_mut("Config").and_then(|c| c.get_mut("image")) {
            Some(slot) if slot.is_string() => Ok(slot),
            _ => Err(self.unexpected(format!(
                "a Config.image on task `{}` (a docker or podman task)",
                self.task
            ))),
        }
    }

    /// Follows the job's latest deployment once it belongs to `modify_index` or later.
    /// With `registered` false (nothing was changed) an absent or older deployment means
    /// there is nothing to wait for.
    async fn wait(
        &self,
        modify_index: u64,
        image: &str,
        registered: bool,
    ) -> Result<(), ExecError> {
        let mut promoted = false;
        loop {
            let d = self
                .call
                .http
                .send(
                    self.request(
                        reqwest::Method::GET,
                        &format!("/v1/job/{}/deployment", self.job),
                    ),
                    "read the deployment of",
                    &self.resource,
                )
                .await?;
            let stale = d.is_null() || d["JobModifyIndex"].as_u64().unwrap_or(0) < modify_index;
            if stale && !registered {
                return Ok(());
            }
            let state = if d.is_null() {
                "no deployment yet".to_owned()
            } else if d["JobModifyIndex"].as_u64().unwrap_or(0) < modify_index {
                format!(
                    "latest deployment is for job modify index {}, waiting for {modify_index}",
                    d["JobModifyIndex"].as_u64().unwrap_or(0)
                )
            } else {
                let id = d["ID"].as_str().unwrap_or_default().to_owned();
                let status = d["Status"].as_str().unwrap_or("unknown");
                let description = d["StatusDescription"].as_str().unwrap_or_default();
                match status {
                    "successful" => return Ok(()),
                    "failed" | "cancelled" => {
                        return Err(ExecError::RolloutFailed {
                            platform: PLATFORM,
                            resource: self.resource.clone(),
                            image: image.to_owned(),
                            detail: format!("deployment {id} is {status}: {description}"),
                        });
                    }
                    _ => {}
                }
                let g = &d["TaskGroups"][self.group];
                let desired_canaries = g["DesiredCanaries"].as_u64().unwrap_or(0);
                let healthy = g["HealthyAllocs"].as_u64().unwrap_or(0);
                let needs_promotion = desired_canaries > 0
                    && g["Promoted"] != true
                    && g["AutoPromote"] != true
                    && healthy >= desired_canaries;
                if needs_promotion && !promoted {
                    self.call
                        .http
                        .send(
                            self.request(
                                reqwest::Method::POST,
                                &format!("/v1/deployment/promote/{id}"),
                            )
                            .json(&json!({"DeploymentID": id, "All": true})),
                            "promote the canaries of",
                            &self.resource,
                        )
                        .await?;
                    promoted = true;
                    self.call.log().line(&format!(
                        "nomad `{}`: promoted {healthy} healthy canaries of deployment {id}",
                        self.resource
                    ));
                }
                format!(
                    "deployment {id} {status} ({description}): healthy {healthy}/{}",
                    g["DesiredTotal"].as_u64().unwrap_or(0)
                )
            };
            self.call
                .log()
                .line(&format!("nomad `{}`: {state}", self.resource));
            self.call.pause(&state).await;
        }
    }
}

/// The image of the named task.
pub(crate) async fn current_image(call: &Call, api: &ApiConnection) -> Result<String, ExecError> {
    let nomad = Nomad::new(call, api)?;
    let mut job = nomad.read_job().await?;
    let slot = nomad.image_slot(&mut job)?;
    Ok(slot.as_str().unwrap_or_default().to_owned())
}

/// Changes the task's image, registers the job with `EnforceIndex`, and follows its deployment.
pub(crate) async fn deploy(
    call: &Call,
    api: &ApiConnection,
    image: &str,
) -> Result<Rolled, ExecError> {
    let nomad = Nomad::new(call, api)?;
    let mut job = nomad.read_job().await?;
    let read_index = job["JobModifyIndex"]
        .as_u64()
        .ok_or_else(|| nomad.unexpected("a JobModifyIndex on the job"))?;
    let slot = nomad.image_slot(&mut job)?;
    let previous = slot.as_str().unwrap_or_default().to_owned();
    call.saw_previous(&previous);
    let changed = previous != image;
    let wait_index = if changed {
        *slot = Value::String(image.to_owned());
        let body = json!({"Job": job, "EnforceIndex": true, "JobModifyIndex": read_index});
        let answer = call
            .http
            .send(
                nomad
                    .request(reqwest::Method::POST, &format!("/v1/job/{}", nomad.job))
                    .json(&body),
                "register",
                &nomad.resource,
            )
            .await
            .map_err(|e| conflict(e, read_index))?;
        let index = answer["JobModifyIndex"]
            .as_u64()
            .ok_or_else(|| nomad.unexpected("a JobModifyIndex from the job register"))?;
        call.log().line(&format!(
            "nomad `{}`: registered with `{image}` (eval {}, job modify index {index})",
            nomad.resource,
            answer["EvalID"].as_str().unwrap_or("?")
        ));
        index
    } else {
        read_index
    };
    nomad.wait(wait_index, image, changed).await?;
    Ok(Rolled { previous, changed })
}

/// Nomad answers a failed `EnforceIndex` with a 500 whose text names the conflicting index.
fn conflict(e: ExecError, read_index: u64) -> ExecError {
    match e {
        ExecError::ApiStatus {
            platform,
            action,
            resource,
            detail,
            ..
        } if detail.contains("conflicting job modify index")
            || detail.contains("Enforcing job modify index") =>
        {
            ExecError::ApiConflict {
                platform,
                action,
                resource,
                detail: format!("read at job modify index {read_index}: {detail}"),
            }
        }
        other => other,
    }
}

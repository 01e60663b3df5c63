//! `deployctl plan`: the `--strategy` shorthand as the API's strategy JSON, and the plan as a table.

use serde_json::{Value, json};

use crate::exit::{CliError, USAGE};
use crate::output::{self, Output};

/// `all-at-once`, `blue-green`, `rolling:<batch>`, `canary:<canary>:<batch>`; a batch is `N` or `N%`.
pub fn strategy(text: &str) -> Result<Value, CliError> {
    let usage = || {
        CliError::new(
            USAGE,
            format!(
                "strategy `{text}` is not one of all-at-once, blue-green, rolling:<batch>, canary:<canary>:<batch> (a batch is a count like `2` or a percentage like `25%`)"
            ),
        )
    };
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        ["all-at-once"] => Ok(json!({"type": "all-at-once"})),
        ["blue-green"] => Ok(json!({"type": "blue-green"})),
        ["rolling", b] => Ok(json!({"type": "rolling", "batch": batch(b).ok_or_else(usage)?})),
        ["canary", c, b] => Ok(json!({
            "type": "canary",
            "canary": batch(c).ok_or_else(usage)?,
            "batch": batch(b).ok_or_else(usage)?,
        })),
        _ => Err(usage()),
    }
}

fn batch(text: &str) -> Option<Value> {
    match text.strip_suffix('%') {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .map(|p| json!({"percent": p})),
        None => text
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| json!({"count": n})),
    }
}

/// `sha256:0123456789ab…` (the first 12 hex digits), or `-`.
fn short(digest: &Value) -> Value {
    match digest.as_str() {
        Some(d) if d.len() > 19 => json!(format!("{}…", &d[..19])),
        Some(d) => json!(d),
        None => Value::Null,
    }
}

/// The plan's entries as rows: wave, target, component, change, digest now and planned, inspect error.
pub fn rows(plan: &Value) -> Value {
    let mut rows = Vec::new();
    for wave in plan["waves"].as_array().into_iter().flatten() {
        for e in wave["entries"].as_array().into_iter().flatten() {
            rows.push(json!({
                "wave": format!("{} {}", wave["index"], wave["kind"].as_str().unwrap_or("")),
                "target": e["target_name"],
                "component": e["component"],
                "change": e["change"],
                "running": short(&e["running"]),
                "digest": short(&e["digest"]),
                "error": e["error"],
            }));
        }
    }
    Value::Array(rows)
}

/// Prints the plan as a table.
pub fn print(plan: &Value) {
    output::line(&format!(
        "plan of release {} to environment {} ({}): {} wave(s)",
        plan["release_name"].as_str().unwrap_or("-"),
        plan["environment_name"].as_str().unwrap_or("-"),
        plan["strategy"].as_str().unwrap_or("-"),
        plan["waves"].as_array().map_or(0, Vec::len)
    ));
    if let Some(skipped) = plan["skipped"].as_array().filter(|s| !s.is_empty()) {
        let names: Vec<String> = skipped
            .iter()
            .map(|t| {
                format!(
                    "{} ({})",
                    t["target_name"].as_str().unwrap_or("-"),
                    t["reason"].as_str().unwrap_or("-")
                )
            })
            .collect();
        output::line(&format!("skipped: {}", names.join(", ")));
    }
    output::list(
        Output::Table,
        &rows(plan),
        &[
            "wave",
            "target",
            "component",
            "change",
            "running",
            "digest",
            "error",
        ],
    );
}

/// `deployctl plan`: asks the server for the dry run and prints it.
pub async fn run(
    client: &crate::client::Client,
    out: crate::output::Output,
    release: &str,
    env: &str,
    strategy: &str,
    parallelism: Option<u32>,
) -> Result<(), CliError> {
    use crate::output::{self, Output};
    let p = deploy_api::API_PREFIX;
    let mut body = json!({
        "release": release,
        "environment": env,
        "strategy": self::strategy(strategy)?,
    });
    if let Some(n) = parallelism {
        body["parallelism"] = json!(n);
    }
    let v: Value = client.post(&format!("{p}/plan"), Some(&body)).await?;
    match out {
        Output::Json | Output::Yaml => output::object(out, &v, &[]),
        Output::Table => print(&v),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_to_the_api_json() {
        let check = |text: &str, expected: Value| assert_eq!(strategy(text).unwrap(), expected);
        check("all-at-once", json!({"type": "all-at-once"}));
        check("blue-green", json!({"type": "blue-green"}));
        check(
            "rolling:2",
            json!({"type": "rolling", "batch": {"count": 2}}),
        );
        check(
            "canary:1:50%",
            json!({"type": "canary", "canary": {"count": 1}, "batch": {"percent": 50}}),
        );
        for bad in [
            "rolling",
            "rolling:0",
            "rolling:101%",
            "canary:1",
            "fast",
            "",
        ] {
            assert_eq!(strategy(bad).unwrap_err().code, USAGE, "{bad}");
        }
    }

    #[test]
    fn plan_rows_flatten_waves_and_shorten_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let plan = json!({"waves": [
            {"index": 0, "kind": "batch", "entries": [
                {"target_name": "h1", "component": "web", "change": "update", "running": d, "digest": d, "error": null}]},
            {"index": 1, "kind": "batch", "entries": [
                {"target_name": "h2", "component": "web", "change": "unknown", "running": null, "digest": d, "error": "connect refused"}]},
        ]});
        let rows = rows(&plan);
        assert_eq!(rows[0]["wave"], "0 batch");
        assert_eq!(rows[0]["running"], "sha256:aaaaaaaaaaaa…");
        assert_eq!(rows[1]["target"], "h2");
        assert_eq!(rows[1]["running"], Value::Null);
        assert_eq!(rows[1]["error"], "connect refused");
    }
}

//! Printing results: `--output table` (aligned key/value lines), `json` (the server's JSON) or `yaml` (the same value as YAML); the only module that writes to stdout.

use std::io::{ErrorKind, Write};

use clap::ValueEnum;
use serde_json::Value;

use crate::exit::{SUCCESS, USAGE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// Prints one object: JSON or YAML as is, or its scalar fields as `key  value` lines.
pub fn object(output: Output, value: &Value, fields: &[&str]) {
    write_stdout(render_object(output, value, fields).as_bytes());
}

/// Prints a list: JSON or YAML as is, or a header and one aligned row per item.
pub fn list(output: Output, items: &Value, columns: &[&str]) {
    write_stdout(render_list(output, items, columns).as_bytes());
}

/// Writes the completion script of `shell` for `command` to stdout.
pub fn completions(shell: clap_complete::Shell, command: &mut clap::Command) {
    // Into memory first: generating straight into a closed pipe panics inside clap_complete.
    let mut script = Vec::new();
    clap_complete::generate(shell, command, "deployctl", &mut script);
    write_stdout(&script);
}

/// A progress or log line.
pub fn line(text: &str) {
    write_stdout(format!("{text}\n").as_bytes());
}

/// Every write to stdout goes through here. When the reader has gone
/// (`deployctl … | head`), the process ends quietly with 0 like other CLIs: the
/// reader had what it wanted, and there is no one left to tell. Any other write
/// error (a full disk) is said on stderr and ends it with 2: the output was lost,
/// which a script must not take for success.
fn write_stdout(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    // Flushed per write: a followed job's lines must show as they come, and a
    // failure must surface here, not in a destructor at exit.
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        let (code, message) = on_write_error(&e);
        if let Some(message) = message {
            eprintln!("{message}");
        }
        std::process::exit(i32::from(code));
    }
}

/// The exit code for a failed write to stdout, and what to say on stderr.
fn on_write_error(e: &std::io::Error) -> (u8, Option<String>) {
    match e.kind() {
        ErrorKind::BrokenPipe => (SUCCESS, None),
        _ => (
            USAGE,
            Some(format!("deployctl: cannot write the output to stdout: {e}")),
        ),
    }
}

/// The whole value, pretty JSON or YAML, ending with a newline.
fn render_structured(output: Output, value: &Value) -> Option<String> {
    match output {
        Output::Json => Some(format!(
            "{}\n",
            serde_json::to_string_pretty(value).unwrap_or_default()
        )),
        // serde_yaml ends its document with a newline already.
        Output::Yaml => Some(serde_yaml::to_string(value).unwrap_or_default()),
        Output::Table => None,
    }
}

fn render_object(output: Output, value: &Value, fields: &[&str]) -> String {
    if let Some(text) = render_structured(output, value) {
        return text;
    }
    let width = fields.iter().map(|f| f.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|f| format!("{f:<width$}  {}\n", scalar(lookup(value, f))))
        .collect()
}

fn render_list(output: Output, items: &Value, columns: &[&str]) -> String {
    if let Some(text) = render_structured(output, items) {
        return text;
    }
    let rows: Vec<Vec<String>> = items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|item| columns.iter().map(|c| scalar(lookup(item, c))).collect())
                .collect()
        })
        .unwrap_or_default();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(c.chars().count())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let joined = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        format!("{}\n", joined.trim_end())
    };
    let mut text = line(columns.iter().map(|c| c.to_uppercase()).collect());
    for r in rows {
        text.push_str(&line(r));
    }
    text
}

/// `a.b` path lookup.
fn lookup<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, k| match v {
        Value::Array(a) => k
            .parse::<usize>()
            .ok()
            .and_then(|i| a.get(i))
            .unwrap_or(&Value::Null),
        _ => v.get(k).unwrap_or(&Value::Null),
    })
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.len().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_render_as_table_json_and_yaml() {
        let job = json!({"id": "j1", "status": "running", "tasks": [{"id": "t1"}], "error": null});
        assert_eq!(
            render_object(Output::Table, &job, &["id", "tasks", "error"]),
            "id     j1\ntasks  1\nerror  -\n"
        );
        let text = render_object(Output::Json, &job, &["id"]);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), job);
        assert_eq!(
            render_object(Output::Yaml, &job, &["id"]),
            "error: null\nid: j1\nstatus: running\ntasks:\n- id: t1\n"
        );
    }

    #[test]
    fn lists_render_as_aligned_rows_or_the_whole_value() {
        let items = json!([
            {"id": "a", "connection": {"host": "10.0.0.5"}},
            {"id": "bbbb", "connection": {"host": null}},
        ]);
        assert_eq!(
            render_list(Output::Table, &items, &["id", "connection.host"]),
            "ID    CONNECTION.HOST\na     10.0.0.5\nbbbb  -\n"
        );
        let yaml = render_list(Output::Yaml, &items, &["id"]);
        assert_eq!(
            serde_yaml::from_str::<Value>(&yaml).unwrap(),
            items,
            "{yaml}"
        );
    }

    #[test]
    fn a_closed_pipe_ends_quietly_and_other_write_errors_do_not() {
        let gone = std::io::Error::from(ErrorKind::BrokenPipe);
        assert_eq!(on_write_error(&gone), (SUCCESS, None));
        let full = std::io::Error::from(ErrorKind::StorageFull);
        let (code, message) = on_write_error(&full);
        assert_eq!(code, USAGE);
        assert!(message.unwrap().contains("cannot write the output"));
    }
}

//! Printing results: `--output json` (the server's JSON) or `table` (aligned key/value lines); the only module that writes to stdout.

#![expect(
    clippy::print_stdout,
    reason = "the CLI's results go to stdout; this module is the one place that writes them"
)]

use clap::ValueEnum;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Prints one object: JSON as is, or its scalar fields as `key  value` lines.
pub fn object(output: Output, value: &Value, fields: &[&str]) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Table => {
            let width = fields.iter().map(|f| f.len()).max().unwrap_or(0);
            for f in fields {
                println!("{f:<width$}  {}", scalar(lookup(value, f)));
            }
        }
    }
}

/// Prints a list: JSON as is, or a header and one aligned row per item.
pub fn list(output: Output, items: &Value, columns: &[&str]) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(items).unwrap_or_default()
        ),
        Output::Table => {
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
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            println!(
                "{}",
                line(columns.iter().map(|c| c.to_uppercase()).collect())
            );
            for r in rows {
                println!("{}", line(r));
            }
        }
    }
}

/// Writes the completion script of `shell` for `command` to stdout.
pub fn completions(shell: clap_complete::Shell, command: &mut clap::Command) {
    // Into memory first: generating straight into a closed pipe panics inside clap_complete.
    let mut script = Vec::new();
    clap_complete::generate(shell, command, "deployctl", &mut script);
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
}

/// A progress or log line.
pub fn line(text: &str) {
    println!("{text}");
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

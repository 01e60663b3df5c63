//! The generated part of docs/benchmarks.md: figures merged across runs, one table per section, written between the markers.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::stats::{Summary, number, summarize};

pub const BEGIN: &str = "<!-- bench-report:begin -->";
pub const END: &str = "<!-- bench-report:end -->";

/// One figure, its samples gathered over every run of its benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub figure: String,
    pub unit: String,
    pub better: String,
    pub samples: Vec<f64>,
    pub baseline: Option<(String, Vec<f64>)>,
    pub goal: Option<Goal>,
    pub notes: Vec<String>,
}

/// A goal on the median or on the ratio to the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub on_ratio: bool,
    pub below: bool,
    pub value: f64,
}

fn samples(v: &Value) -> Vec<f64> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

/// Merges JSON lines (one per figure and run) by figure name, in order of first appearance.
pub fn merge(lines: &str) -> anyhow::Result<Vec<Merged>> {
    let mut merged: Vec<Merged> = Vec::new();
    for (i, line) in lines.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let doc: Value =
            serde_json::from_str(line).with_context(|| format!("line {} is not JSON", i + 1))?;
        let figure = doc["figure"]
            .as_str()
            .with_context(|| format!("line {} has no figure", i + 1))?;
        let baseline = doc.get("baseline").map(|b| {
            (
                b["figure"].as_str().unwrap_or("baseline").to_owned(),
                samples(&b["samples"]),
            )
        });
        let notes = doc["notes"].as_str().unwrap_or_default().to_owned();
        if let Some(m) = merged.iter_mut().find(|m| m.figure == figure) {
            m.samples.extend(samples(&doc["samples"]));
            if let (Some((_, into)), Some((_, more))) = (&mut m.baseline, baseline) {
                into.extend(more);
            }
            if !notes.is_empty() && !m.notes.contains(&notes) {
                m.notes.push(notes);
            }
            continue;
        }
        let goal = doc.get("goal").map(|g| Goal {
            on_ratio: g["of"] == "ratio",
            below: g["direction"] != "above",
            value: g["value"].as_f64().unwrap_or(f64::NAN),
        });
        merged.push(Merged {
            figure: figure.to_owned(),
            unit: doc["unit"].as_str().unwrap_or_default().to_owned(),
            better: doc["better"].as_str().unwrap_or("lower").to_owned(),
            samples: samples(&doc["samples"]),
            baseline,
            goal,
            notes: if notes.is_empty() {
                vec![]
            } else {
                vec![notes]
            },
        });
    }
    Ok(merged)
}

impl Merged {
    fn summary(&self) -> Option<Summary> {
        summarize(&self.samples)
    }

    fn baseline_summary(&self) -> Option<Summary> {
        self.baseline.as_ref().and_then(|(_, s)| summarize(s))
    }

    /// Figure median over baseline median.
    pub fn ratio(&self) -> Option<f64> {
        let (f, b) = (self.summary()?, self.baseline_summary()?);
        (b.median != 0.0).then(|| f.median / b.median)
    }

    /// The goal as text, and whether the run met it (None: no goal, or nothing to judge).
    pub fn goal_cell(&self) -> (String, Option<bool>) {
        let Some(goal) = &self.goal else {
            return ("–".to_owned(), None);
        };
        let sign = if goal.below { "≤" } else { "≥" };
        let (text, value) = if goal.on_ratio {
            (format!("ratio {sign} {}", number(goal.value)), self.ratio())
        } else {
            (
                format!("{sign} {} {}", number(goal.value), self.unit),
                self.summary().map(|s| s.median),
            )
        };
        let met = value.map(|v| {
            if goal.below {
                v <= goal.value
            } else {
                v >= goal.value
            }
        });
        (text, met)
    }
}

fn spread(s: &Summary) -> String {
    format!("{}..{}", number(s.min), number(s.max))
}

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "no figure",
    }
}

/// One section's table and notes.
fn section_table(out: &mut String, figures: &[Merged]) {
    out.push_str("| figure | median | min..max | n | same-run baseline: median (min..max, n) | ratio | goal |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for f in figures {
        let (median, range, n) = match f.summary() {
            Some(s) => (
                format!("**{} {}**", number(s.median), f.unit),
                spread(&s),
                s.n.to_string(),
            ),
            None => ("no samples".to_owned(), "–".to_owned(), "0".to_owned()),
        };
        let baseline = match (&f.baseline, f.baseline_summary()) {
            (Some((name, _)), Some(b)) => format!(
                "{name}: {} {} ({}, {})",
                number(b.median),
                f.unit,
                spread(&b),
                b.n
            ),
            (Some((name, _)), None) => format!("{name}: no samples"),
            (None, _) => "–".to_owned(),
        };
        let ratio = f.ratio().map_or("–".to_owned(), |r| format!("{r:.2}"));
        let (goal, met) = f.goal_cell();
        let goal = if f.goal.is_some() {
            format!("{goal}: {}", met_text(met))
        } else {
            goal
        };
        let _ = writeln!(
            out,
            "| {} | {median} | {range} | {n} | {baseline} | {ratio} | {goal} |",
            f.figure
        );
    }
    out.push('\n');
    // Figures with the same notes share one line.
    let mut lines: Vec<(Vec<&str>, String)> = Vec::new();
    for f in figures.iter().filter(|f| !f.notes.is_empty()) {
        let notes = f.notes.join("; ");
        match lines.iter_mut().find(|(_, n)| *n == notes) {
            Some((names, _)) => names.push(&f.figure),
            None => lines.push((vec![&f.figure], notes)),
        }
    }
    for (names, notes) in lines {
        let names: Vec<String> = names.iter().map(|n| format!("*{n}*")).collect();
        let _ = writeln!(out, "- {}: {notes}.", names.join(", "));
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("unknown")
}

fn minutes(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{} min {:02} s", s / 60, s % 60)
}

/// The generated part (between the markers, markers excluded).
pub fn render(run: &Value, figures: &[(String, Vec<Merged>)]) -> String {
    let m = &run["machine"];
    let mut out = String::new();
    out.push_str("<!-- Generated by `cargo xtask bench` (xtask/src/report.rs): edits between the markers are overwritten. -->\n\n");
    out.push_str("## Latest run (generated)\n\n");
    let mode = str_of(run, "mode");
    let _ = writeln!(
        out,
        "Run of {} ({mode} mode{}), commit `{}` (\"{}\"){}. {} in all, of which {} measuring (the rest: release builds).",
        str_of(run, "started"),
        if mode == "quick" {
            ": fewer runs and sizes, a smoke test, not figures to quote"
        } else {
            ""
        },
        str_of(m, "commit"),
        str_of(m, "commit_subject"),
        if m["uncommitted_changes"] == true {
            " plus uncommitted changes"
        } else {
            ""
        },
        minutes(run["seconds_total"].as_f64().unwrap_or(0.0)),
        minutes(run["seconds_measuring"].as_f64().unwrap_or(0.0)),
    );
    if let Some(only) = run["only"].as_array() {
        let only: Vec<&str> = only.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(
            out,
            "This invocation ran only {} (`--only`); the other sections keep their figures from their own last run, with their own start times below.",
            only.join(", ")
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "Machine: {} ({} cores), {:.1} GiB RAM, {}, kernel {}; {}; {}; Docker {}; {}.\n",
        str_of(m, "cpu"),
        m["cores"],
        m["ram_gib"].as_f64().unwrap_or(0.0),
        str_of(m, "os"),
        str_of(m, "kernel"),
        str_of(m, "rustc"),
        str_of(m, "openssh"),
        str_of(m, "docker"),
        str_of(m, "postgres"),
    );
    let _ = writeln!(
        out,
        "Load average (1, 5, 15 min): {} at the start, {} at the end; before and after each benchmark in its section. \
         The machine is shared with other engineers' builds and tests, so absolute figures move with the load: \
         read each figure against its baseline, measured in the same run (interleaved round by round where the benchmark allows).\n",
        str_of(run, "load_start"),
        str_of(run, "load_end"),
    );
    out.push_str(
        "Each table: the median and min..max over n samples (runs, rounds, cycles or timed samples: the notes say which), \
         the same-run baseline likewise, the ratio of the two medians (figure / baseline), and the goal, judged on the median \
         (or on the ratio). Raw samples: `target/bench-report/*.jsonl` of the run.\n\n",
    );
    // The goals at a glance.
    out.push_str("| section | figure | median | baseline median | ratio | goal |\n|---|---|---|---|---|---|\n");
    for (title, merged) in figures {
        for f in merged.iter().filter(|f| f.goal.is_some()) {
            let (goal, met) = f.goal_cell();
            let _ = writeln!(
                out,
                "| {title} | {} | {} | {} | {} | {goal}: {} |",
                f.figure,
                f.summary().map_or("–".to_owned(), |s| format!(
                    "{} {}",
                    number(s.median),
                    f.unit
                )),
                f.baseline_summary().map_or("–".to_owned(), |s| format!(
                    "{} {}",
                    number(s.median),
                    f.unit
                )),
                f.ratio().map_or("–".to_owned(), |r| format!("{r:.2}")),
                met_text(met),
            );
        }
    }
    out.push('\n');
    let mut sections_shown = std::collections::BTreeSet::new();
    for (step, (title, merged)) in run["steps"].as_array().into_iter().flatten().zip(figures) {
        let first_of_section = sections_shown.insert(str_of(step, "section"));
        let _ = writeln!(out, "### {title}\n");
        let _ = writeln!(
            out,
            "`{}`, {} invocation(s), started {}, took {}; load average {} before, {} after.\n",
            str_of(step, "command"),
            step["invocations"],
            str_of(step, "started"),
            minutes(step["seconds"].as_f64().unwrap_or(0.0)),
            str_of(step, "load_before"),
            str_of(step, "load_after"),
        );
        let status = str_of(step, "status");
        if status != "ok" {
            let _ = writeln!(
                out,
                "**This benchmark {status}**: the figures below, if any, come from the invocations that completed before it.\n"
            );
        }
        if merged.is_empty() && !first_of_section {
            let _ = writeln!(
                out,
                "Its figures are in the table of the first `{}` step above (one table per section).\n",
                str_of(step, "section")
            );
        } else if merged.is_empty() {
            out.push_str("No figures were recorded.\n\n");
        } else {
            section_table(&mut out, merged);
            out.push('\n');
        }
    }
    out
}

/// Reads the figures of every recorded step from `dir` and rewrites the generated part of `doc`.
pub fn rewrite(doc: &Path, run: &Value, dir: &Path) -> anyhow::Result<()> {
    let mut figures = Vec::new();
    let mut read = std::collections::BTreeSet::new();
    for step in run["steps"].as_array().into_iter().flatten() {
        let section = str_of(step, "section");
        // Steps of one section share its file: its figures go with the first of them.
        if !read.insert(section) {
            figures.push((str_of(step, "title").to_owned(), Vec::new()));
            continue;
        }
        let lines =
            std::fs::read_to_string(dir.join(format!("{section}.jsonl"))).unwrap_or_default();
        let merged = merge(&lines)
            .with_context(|| format!("figures of `{section}` in {}", dir.display()))?;
        figures.push((str_of(step, "title").to_owned(), merged));
    }
    let text =
        std::fs::read_to_string(doc).with_context(|| format!("cannot read {}", doc.display()))?;
    let updated = replace_between_markers(&text, &render(run, &figures))?;
    std::fs::write(doc, updated).with_context(|| format!("cannot write {}", doc.display()))
}

/// `text` with what lies between the markers replaced by `generated`.
pub fn replace_between_markers(text: &str, generated: &str) -> anyhow::Result<String> {
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!("docs/benchmarks.md has no `{BEGIN}` ... `{END}` markers");
    };
    if end < begin {
        bail!("`{END}` comes before `{BEGIN}`");
    }
    Ok(format!(
        "{}{BEGIN}\n{}{}",
        &text[..begin],
        generated,
        &text[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"{"section":"ssh","figure":"fan-out","unit":"ms","better":"lower","samples":[300,200],"baseline":{"figure":"openssh","samples":[700]},"goal":{"of":"ratio","direction":"below","value":1.5},"notes":"20 hosts"}
{"section":"ssh","figure":"pooled","unit":"ms","better":"lower","samples":[30],"notes":""}
{"section":"ssh","figure":"fan-out","unit":"ms","better":"lower","samples":[250],"baseline":{"figure":"openssh","samples":[800,750]},"goal":{"of":"ratio","direction":"below","value":1.5},"notes":"20 hosts"}
"#;

    #[test]
    fn runs_of_one_figure_are_merged_in_order_of_appearance() {
        let merged = merge(LINES).unwrap();
        let names: Vec<&str> = merged.iter().map(|m| m.figure.as_str()).collect();
        assert_eq!(names, ["fan-out", "pooled"]);
        assert_eq!(merged[0].samples, [300.0, 200.0, 250.0]);
        assert_eq!(
            merged[0].baseline,
            Some(("openssh".to_owned(), vec![700.0, 800.0, 750.0]))
        );
        assert_eq!(merged[0].notes, ["20 hosts"]);
        assert!(merged[1].notes.is_empty() && merged[1].baseline.is_none());
    }

    #[test]
    fn goals_are_judged_on_the_median_or_the_ratio() {
        let merged = merge(LINES).unwrap();
        // 250 / 750 = 0.33 <= 1.5
        assert_eq!(
            merged[0].goal_cell(),
            ("ratio ≤ 1.50".to_owned(), Some(true))
        );
        assert_eq!(merged[1].goal_cell(), ("–".to_owned(), None));
        let mut slow = merged[1].clone();
        slow.goal = Some(Goal {
            on_ratio: false,
            below: false,
            value: 50.0,
        });
        assert_eq!(slow.goal_cell(), ("≥ 50.0 ms".to_owned(), Some(false)));
    }

    #[test]
    fn only_the_text_between_the_markers_changes() {
        let doc = format!("# Title\n\nintro\n\n{BEGIN}\nold\n{END}\n\n# History\n");
        let new = replace_between_markers(&doc, "new\n").unwrap();
        assert_eq!(
            new,
            format!("# Title\n\nintro\n\n{BEGIN}\nnew\n{END}\n\n# History\n")
        );
        assert!(replace_between_markers("no markers", "x").is_err());
    }

    #[test]
    fn a_section_table_shows_median_spread_baseline_ratio_and_goal() {
        let merged = merge(LINES).unwrap();
        let mut out = String::new();
        section_table(&mut out, &merged);
        assert!(
            out.contains("| fan-out | **250 ms** | 200..300 | 3 | openssh: 750 ms (700..800, 3) | 0.33 | ratio ≤ 1.50: met |"),
            "{out}"
        );
        assert!(
            out.contains("| pooled | **30.0 ms** | 30.0..30.0 | 1 | – | – | – |"),
            "{out}"
        );
        assert!(out.contains("- *fan-out*: 20 hosts."), "{out}");
    }
}

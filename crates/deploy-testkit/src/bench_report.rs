//! Machine-readable benchmark figures: one JSON line per figure appended to `$BENCH_REPORT_FILE`, read by `cargo xtask bench`.
//!
//! Every benchmark keeps its human output; when `BENCH_REPORT_FILE` is set it
//! also appends, per figure, its samples (one value per run or per sample, in
//! the figure's unit), the same-run baseline's samples, the goal if there is
//! one, and notes. The report generator (xtask/) merges lines with the same
//! section and figure (several runs of one benchmark) and computes the median,
//! the spread and the ratio to the baseline.

use std::io::Write;

/// The environment variable naming the file the figures are appended to.
pub const REPORT_FILE_VAR: &str = "BENCH_REPORT_FILE";

/// Whether a benchmark run is asked for machine-readable figures.
pub fn enabled() -> bool {
    std::env::var_os(REPORT_FILE_VAR).is_some()
}

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Latencies, durations, memory.
    Lower,
    /// Throughputs.
    Higher,
}

impl Better {
    fn as_str(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }
}

/// A goal on the median of the figure, or on its ratio to the baseline's median.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// `"median"` or `"ratio"`.
    of: &'static str,
    /// `"below"` (at most) or `"above"` (at least).
    direction: &'static str,
    value: f64,
}

impl Goal {
    /// The median is under `value` (in the figure's unit).
    pub fn median_below(value: f64) -> Self {
        Self {
            of: "median",
            direction: "below",
            value,
        }
    }
    /// The median is at least `value`.
    pub fn median_above(value: f64) -> Self {
        Self {
            of: "median",
            direction: "above",
            value,
        }
    }
    /// The figure's median over the baseline's median is at most `value`.
    pub fn ratio_below(value: f64) -> Self {
        Self {
            of: "ratio",
            direction: "below",
            value,
        }
    }
}

/// One figure of a benchmark run.
#[derive(Debug, Clone)]
pub struct Figure {
    section: String,
    figure: String,
    unit: String,
    better: Better,
    samples: Vec<f64>,
    baseline: Option<(String, Vec<f64>)>,
    goal: Option<Goal>,
    notes: String,
}

impl Figure {
    /// `samples` in `unit` (one per run, or one per timed sample).
    pub fn new(section: &str, figure: &str, unit: &str, better: Better, samples: Vec<f64>) -> Self {
        Self {
            section: section.to_owned(),
            figure: figure.to_owned(),
            unit: unit.to_owned(),
            better,
            samples,
            baseline: None,
            goal: None,
            notes: String::new(),
        }
    }

    /// The comparison measured in the same run, in the same unit.
    #[must_use]
    pub fn baseline(mut self, figure: &str, samples: Vec<f64>) -> Self {
        self.baseline = Some((figure.to_owned(), samples));
        self
    }

    #[must_use]
    pub fn goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self
    }

    /// What was measured and how, in a sentence.
    #[must_use]
    pub fn notes(mut self, notes: &str) -> Self {
        notes.clone_into(&mut self.notes);
        self
    }

    /// The JSON line (without its newline).
    pub fn to_json(&self) -> String {
        let mut doc = serde_json::json!({
            "section": self.section,
            "figure": self.figure,
            "unit": self.unit,
            "better": self.better.as_str(),
            "samples": self.samples,
            "notes": self.notes,
        });
        if let Some((figure, samples)) = &self.baseline {
            doc["baseline"] = serde_json::json!({"figure": figure, "samples": samples});
        }
        if let Some(goal) = self.goal {
            doc["goal"] = serde_json::json!({
                "of": goal.of,
                "direction": goal.direction,
                "value": goal.value,
            });
        }
        doc.to_string()
    }

    /// Appends the figure to `$BENCH_REPORT_FILE`; does nothing when it is not set.
    pub fn emit(&self) -> std::io::Result<()> {
        let Some(path) = std::env::var_os(REPORT_FILE_VAR) else {
            return Ok(());
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        // One write per line, so lines of concurrent writers do not interleave.
        file.write_all(format!("{}\n", self.to_json()).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_is_one_json_line_with_its_baseline_and_goal() {
        let line = Figure::new("ssh", "fan-out", "ms", Better::Lower, vec![2.0, 1.5])
            .baseline("openssh", vec![3.0])
            .goal(Goal::ratio_below(1.5))
            .notes("20 hosts")
            .to_json();
        assert!(!line.contains('\n'));
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["section"], "ssh");
        assert_eq!(doc["better"], "lower");
        assert_eq!(doc["samples"], serde_json::json!([2.0, 1.5]));
        assert_eq!(doc["baseline"]["figure"], "openssh");
        assert_eq!(doc["goal"]["of"], "ratio");
        assert_eq!(doc["goal"]["direction"], "below");
        assert_eq!(doc["notes"], "20 hosts");
    }

    #[test]
    fn without_baseline_or_goal_the_keys_are_absent() {
        let line = Figure::new("a", "b", "ms", Better::Higher, vec![1.0]).to_json();
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(doc.get("baseline").is_none() && doc.get("goal").is_none());
        assert_eq!(doc["better"], "higher");
    }
}

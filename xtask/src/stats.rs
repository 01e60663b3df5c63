//! Median and spread of a figure's samples, and the number formatting of the report.

/// Median, min, max and count of some samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// The summary of `samples`, `None` when there are none (NaN samples are dropped).
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// A figure for a table: 3 significant digits under 1,000, whole numbers with
/// thousands separators from 1,000 on.
pub fn number(x: f64) -> String {
    let a = x.abs();
    if a >= 999.5 {
        let digits = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 { format!("-{out}") } else { out }
    } else if a >= 99.95 {
        format!("{x:.0}")
    } else if a >= 9.995 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(samples: &[f64], expected: Option<(f64, f64, f64, usize)>) {
        let got = summarize(samples).map(|s| (s.median, s.min, s.max, s.n));
        assert_eq!(got, expected, "{samples:?}");
    }

    #[test]
    fn median_and_spread() {
        check(&[], None);
        check(&[3.0], Some((3.0, 3.0, 3.0, 1)));
        check(&[5.0, 1.0, 3.0], Some((3.0, 1.0, 5.0, 3)));
        check(&[4.0, 1.0, 3.0, 2.0], Some((2.5, 1.0, 4.0, 4)));
        check(&[f64::NAN, 2.0], Some((2.0, 2.0, 2.0, 1)));
    }

    #[test]
    fn numbers_read_well() {
        for (x, shown) in [
            (0.1234, "0.12"),
            (12.345, "12.3"),
            (123.4, "123"),
            (999.4, "999"),
            (1_234.0, "1,234"),
            (13_841.2, "13,841"),
            (1_234_567.0, "1,234,567"),
            (-2_500.0, "-2,500"),
        ] {
            assert_eq!(number(x), shown, "{x}");
        }
    }
}

//! A small, fixed YAML emitter: block style, two-space indent, every string double-quoted, so output bytes never depend on a library's formatting choices.
//!
//! Readers are YAML 1.1 (PyYAML in docker-compose v1) and YAML 1.2 (Go in
//! compose v2). Double-quoted strings mean the same in both, whatever they
//! contain (`yes`, `0755`, `12:30`, `~`); keys are plain only when they cannot
//! be read as anything but a string.

use serde_yaml::{Number, Value};

/// Appends `s` as a YAML double-quoted scalar.
pub(crate) fn quoted(out: &mut String, s: &str) {
    out.push('"');
    // Fast path: printable ASCII without `"` or `\` is copied as is.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if needs_escape(c) => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Characters a YAML 1.1 reader does not accept raw in a double-quoted scalar, or would fold as a line break.
fn needs_escape(c: char) -> bool {
    let n = u32::from(c);
    n < 0x20
        || (0x7f..=0x9f).contains(&n)
        || matches!(n, 0x2028 | 0x2029 | 0xfeff | 0xfffe | 0xffff)
}

/// Appends a mapping key: plain when it can only be read as this string, quoted otherwise.
pub(crate) fn key(out: &mut String, k: &str) {
    if is_plain_key(k) {
        out.push_str(k);
    } else {
        quoted(out, k);
    }
}

fn is_plain_key(k: &str) -> bool {
    let mut chars = k.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    // YAML 1.1 reads these as booleans or null.
    const WORDS: [&str; 12] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf", "_",
    ];
    first_ok && rest_ok && !WORDS.iter().any(|w| w.eq_ignore_ascii_case(k))
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

/// Appends `key: value` at `level` spaces, then a newline; nested collections go on the following lines.
pub(crate) fn entry(out: &mut String, level: usize, k: &str, v: &Value) {
    indent(out, level);
    key(out, k);
    out.push(':');
    value_after_indicator(out, level, v);
}

/// Appends `key: "value"` at `level` spaces for a string value.
pub(crate) fn str_entry(out: &mut String, level: usize, k: &str, v: &str) {
    indent(out, level);
    key(out, k);
    out.push_str(": ");
    quoted(out, v);
    out.push('\n');
}

/// Appends `key:` at `level` spaces, for a nested block that the caller writes.
pub(crate) fn open(out: &mut String, level: usize, k: &str) {
    indent(out, level);
    key(out, k);
    out.push_str(":\n");
}

/// After `key:` or `-`: a scalar or empty collection on the same line, otherwise a nested block.
fn value_after_indicator(out: &mut String, level: usize, v: &Value) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            for (k, v) in m {
                indent(out, level + 2);
                map_key(out, k);
                out.push(':');
                value_after_indicator(out, level + 2, v);
            }
        }
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            for item in s {
                indent(out, level + 2);
                out.push('-');
                value_after_indicator(out, level + 2, item);
            }
        }
        other => {
            out.push(' ');
            scalar(out, other);
            out.push('\n');
        }
    }
}

fn map_key(out: &mut String, k: &Value) {
    match k {
        Value::String(s) => key(out, s),
        other => scalar(out, other),
    }
}

/// Scalars and empty collections. Templates with tags or collection keys are refused
/// when parsed, so the fallbacks below only keep this function total.
fn scalar(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => number(out, n),
        Value::String(s) => quoted(out, s),
        Value::Sequence(_) => out.push_str("[]"),
        Value::Mapping(_) => out.push_str("{}"),
        Value::Tagged(t) => scalar(out, &t.value),
    }
}

/// Integers as digits; floats always with a `.` and a signed exponent, as YAML 1.1 requires.
fn number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        out.push_str(&float(f));
    }
}

pub(crate) fn float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_owned();
    }
    let s = format!("{f:?}");
    let (mantissa, exponent) = match s.split_once('e') {
        Some((m, e)) => (m.to_owned(), Some(e.to_owned())),
        None => (s.clone(), None),
    };
    let mantissa = if mantissa.contains('.') {
        mantissa
    } else {
        format!("{mantissa}.0")
    };
    match exponent {
        Some(e) if e.starts_with('-') => format!("{mantissa}e{e}"),
        Some(e) => format!("{mantissa}e+{e}"),
        None => mantissa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> String {
        let mut out = String::new();
        quoted(&mut out, s);
        out
    }

    #[test]
    fn quoting_escapes_what_yaml_readers_would_change() {
        assert_eq!(q("plain"), "\"plain\"");
        assert_eq!(q("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(q("tab\there\n"), "\"tab\\there\\n\"");
        assert_eq!(q("\u{1b}[0m"), "\"\\u001b[0m\"");
        assert_eq!(q("ls\u{2028}x"), "\"ls\\u2028x\"");
        assert_eq!(q("é ü 日本"), "\"é ü 日本\"");
    }

    #[test]
    fn keys_are_plain_only_when_unambiguous() {
        let k = |s: &str| {
            let mut out = String::new();
            key(&mut out, s);
            out
        };
        assert_eq!(k("web"), "web");
        assert_eq!(k("stella.release.id"), "stella.release.id");
        assert_eq!(k("On"), "\"On\"");
        assert_eq!(k("1web"), "\"1web\"");
        assert_eq!(k("a b"), "\"a b\"");
        assert_eq!(k(""), "\"\"");
    }

    #[test]
    fn floats_always_read_back_as_floats() {
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(1e20), "1.0e+20");
        assert_eq!(float(1.5e-7), "1.5e-7");
        assert_eq!(float(f64::NEG_INFINITY), "-.inf");
    }

    #[test]
    fn nested_values_are_block_style() {
        let v: Value = serde_yaml::from_str("a: [1, {b: x, c: []}]\nd: {}\n").unwrap();
        let mut out = String::new();
        entry(&mut out, 0, "root", &v);
        assert_eq!(
            out,
            "root:\n  a:\n    - 1\n    -\n      b: \"x\"\n      c: []\n  d: {}\n"
        );
        let back: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(back["root"], v);
    }
}

//! POSIX shell quoting: the one function through which every value reaches a remote shell.

/// Quotes `value` as one POSIX `sh` word: wrapped in single quotes, each `'` written as `'\''`.
///
/// Inside single quotes nothing is special (`$`, backticks, `\`, `;`, newlines are
/// literal), so the result always expands to exactly `value`. Empty strings become `''`.
pub fn sh_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Joins an argument vector into one shell command line, quoting every argument.
pub fn sh_join<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| sh_quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(sh_quote(input), expected, "quoting {input:?}");
    }

    #[test]
    fn quotes_every_special_character() {
        check("", "''");
        check("plain", "'plain'");
        check("it's", "'it'\\''s'");
        check("x; touch /tmp/pwned", "'x; touch /tmp/pwned'");
        check("$(id)", "'$(id)'");
        check("`id`", "'`id`'");
        check("a\nb", "'a\nb'");
        check("'", "''\\'''");
    }

    /// The real check: `sh` must give back exactly the input, and run nothing.
    #[test]
    fn sh_reads_back_exactly_the_input() {
        let marker = std::env::temp_dir().join(format!("quote-pwned-{}", std::process::id()));
        let m = marker.display().to_string();
        let inputs = [
            format!("x; touch {m}"),
            format!("$(touch {m})"),
            format!("`touch {m}`"),
            format!("'; touch {m}; '"),
            format!("\"; touch {m}; \""),
            format!("a\ntouch {m}"),
            format!("\\'$(touch {m})\\"),
            "ünïcödé * ? [a] ~ {a,b} & | < > # !".to_owned(),
            String::new(),
        ];
        for input in &inputs {
            let script = format!("printf '%s' {}", sh_quote(input));
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(String::from_utf8(out.stdout).unwrap(), *input);
        }
        let joined = sh_join(&["printf", "%s|", "a b", "$HOME", "'"]);
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&joined)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a b|$HOME|'|");
        assert!(!marker.exists(), "an input was executed");
    }
}

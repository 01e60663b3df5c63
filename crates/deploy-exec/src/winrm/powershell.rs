//! PowerShell text: single-quoted literals for user values and `-EncodedCommand` (base64 of UTF-16LE).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Characters PowerShell treats as a single quote inside a single-quoted string
/// (ASCII `'` and the typographic quotes U+2018..U+201B).
const SINGLE_QUOTES: [char; 5] = ['\'', '\u{2018}', '\u{2019}', '\u{201A}', '\u{201B}'];

/// `value` as a PowerShell single-quoted string literal: no expansion of `$`, backticks or
/// subexpressions; every quote character is doubled, which is the only escape such a literal has.
pub fn ps_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if SINGLE_QUOTES.contains(&c) {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `script` as the argument of `powershell -EncodedCommand`.
pub fn encoded_command(script: &str) -> String {
    let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    BASE64.encode(utf16)
}

/// The argument vector of `powershell` running `script` without profile or prompts.
pub fn powershell_args(script: &str) -> Vec<String> {
    vec![
        "-NoProfile".to_owned(),
        "-NonInteractive".to_owned(),
        "-EncodedCommand".to_owned(),
        encoded_command(script),
    ]
}

/// A script calling `argv[0]` with the rest as arguments, each a quoted literal, and
/// exiting with its exit code.
pub fn call_script(argv: &[String]) -> String {
    let mut s = String::from("$ErrorActionPreference = 'Stop'\n& ");
    let quoted: Vec<String> = argv.iter().map(|a| ps_quote(a)).collect();
    s.push_str(&quoted.join(" "));
    s.push_str("\nexit $LASTEXITCODE\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(ps_quote(input), expected, "quoting {input:?}");
    }

    #[test]
    fn quote_doubles_every_single_quote_and_nothing_else() {
        check("", "''");
        check("plain", "'plain'");
        check("it's", "'it''s'");
        check("$env:PATH `n $(calc) \"x\"", "'$env:PATH `n $(calc) \"x\"'");
        check("a\u{2019}b", "'a\u{2019}\u{2019}b'");
        check(
            "\u{2018}\u{201A}\u{201B}",
            "'\u{2018}\u{2018}\u{201A}\u{201A}\u{201B}\u{201B}'",
        );
        check(
            "'; Remove-Item C:\\ -Recurse; '",
            "'''; Remove-Item C:\\ -Recurse; '''",
        );
        check("line1\nline2", "'line1\nline2'");
    }

    #[test]
    fn quoted_literal_has_no_unescaped_quote_inside() {
        for input in ["'", "''", "a'b'c", "\u{2019}'\u{2018}", "x'''"] {
            let q = ps_quote(input);
            let inner: Vec<char> = q.chars().collect();
            let inner = &inner[1..inner.len() - 1];
            // Quotes inside come in pairs: a PowerShell parser would never close the literal early.
            let mut i = 0;
            while i < inner.len() {
                if SINGLE_QUOTES.contains(&inner[i]) {
                    assert_eq!(inner.get(i + 1), Some(&inner[i]), "{q}");
                    i += 2;
                } else {
                    i += 1;
                }
            }
        }
    }

    #[test]
    fn encoded_command_is_base64_of_utf16le() {
        // The value pywinrm's fixtures carry for `Write-Error "Error"`.
        assert_eq!(
            encoded_command("Write-Error \"Error\""),
            "VwByAGkAdABlAC0ARQByAHIAbwByACAAIgBFAHIAcgBvAHIAIgA="
        );
        let args = powershell_args("exit 3");
        assert_eq!(
            args[..3],
            ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
        );
    }

    #[test]
    fn call_script_quotes_each_argument() {
        let s = call_script(&["docker".into(), "ps".into(), "a'b $x".into()]);
        assert_eq!(
            s,
            "$ErrorActionPreference = 'Stop'\n& 'docker' 'ps' 'a''b $x'\nexit $LASTEXITCODE\n"
        );
    }
}

//! `Redactor`: replaces known secrets (registry passwords, credentials) in any text that leaves the process.

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// A set of secrets to hide. Empty and very short values are ignored: replacing every
/// "a" in a log would hide nothing and destroy the line.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor hiding nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also hide `secret`, and each of its lines: a log line is one line of output, so
    /// a multi-line value (a key, a certificate) shows up line by line.
    pub fn with(mut self, secret: &str) -> Self {
        let lines = secret.lines().map(str::trim);
        for part in std::iter::once(secret).chain(lines) {
            if part.len() >= 3 && !self.secrets.iter().any(|s| s == part) {
                self.secrets.push(part.to_owned());
            }
        }
        // Longest first, so a secret containing another is hidden whole.
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self
    }

    /// `text` with every secret replaced.
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_longest_first() {
        let r = Redactor::new().with("pass").with("password123").with("");
        assert_eq!(
            r.apply("login password123 and pass"),
            "login [REDACTED] and [REDACTED]"
        );
        assert_eq!(Redactor::new().with("ab").apply("ab"), "ab");
    }
}

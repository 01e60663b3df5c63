//! `AwsEnvironment`: the variables and home directory the AWS default chain reads, captured once so tests pass their own instead of mutating the process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the default credential chain sees: `AWS_*` variables and the home directory
/// (for `~/.aws/config` and `~/.aws/credentials`).
#[derive(Clone, Default)]
pub struct AwsEnvironment {
    vars: BTreeMap<String, String>,
    home: Option<PathBuf>,
}

impl std::fmt::Debug for AwsEnvironment {
    // Values include AWS_SECRET_ACCESS_KEY and session tokens: names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEnvironment")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("home", &self.home)
            .finish()
    }
}

impl AwsEnvironment {
    /// The `AWS_*` variables and `HOME` of this process, read now.
    pub fn from_process() -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        Self {
            vars,
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// An environment made of `vars` and `home` only (tests, embedders).
    pub fn new<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
        home: Option<PathBuf>,
    ) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            home,
        }
    }

    /// A variable's trimmed value; set-but-empty counts as unset, as in the AWS SDKs.
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The same environment with `AWS_PROFILE` set to `profile` (a target's own profile).
    pub(crate) fn with_profile(&self, profile: &str) -> Self {
        let mut env = self.clone();
        env.vars.insert("AWS_PROFILE".into(), profile.to_owned());
        env
    }

    /// The home directory, for `~` in paths.
    pub(crate) fn home(&self) -> Option<&Path> {
        self.home.as_deref()
    }

    /// `path` with a leading `~/` replaced by the home directory.
    pub(crate) fn expand(&self, path: &str) -> PathBuf {
        match (path.strip_prefix("~/"), self.home()) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(path),
        }
    }
}

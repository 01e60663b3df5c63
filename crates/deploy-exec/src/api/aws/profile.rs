//! Shared AWS config and credentials files: `[profile name]` sections in config, `[name]` in credentials, merged with the credentials file winning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::env::AwsEnvironment;
use crate::errors::ExecError;

/// The keys of one section (names lower-cased).
pub(crate) type Keys = BTreeMap<String, String>;

/// The profile the chain should use, or why the profile source has nothing.
#[derive(Debug)]
pub(crate) enum Selected {
    Found { name: String, keys: Keys },
    Absent(String),
}

/// One parsed file: sections by profile name, plus sections whose spelling does not
/// count in this file (`[x]` in config, `[profile x]` in credentials), for the error hint.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) profiles: BTreeMap<String, Keys>,
    pub(crate) misspelt: BTreeMap<String, String>,
}

/// Which file a text came from: the two spell section headers differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Config,
    Credentials,
}

/// Parses the INI dialect of the AWS files: `#`/`;` comment lines, `key = value`,
/// indented continuation lines (nested settings such as `s3 =`) skipped.
pub(crate) fn parse(text: &str, kind: FileKind) -> Parsed {
    let mut out = Parsed::default();
    // None: outside any section, or inside one that is not a profile here.
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split_once(']')) {
            let header = header.0.trim();
            let words: Vec<&str> = header.split_whitespace().collect();
            current = match (kind, words.as_slice()) {
                (FileKind::Config, ["default"] | ["profile", "default"]) => Some("default".into()),
                (FileKind::Config, ["profile", name]) => Some((*name).to_owned()),
                (FileKind::Config, [name]) => {
                    out.misspelt.insert((*name).to_owned(), format!("[{name}]"));
                    None
                }
                (FileKind::Credentials, [name]) => Some((*name).to_owned()),
                (FileKind::Credentials, ["profile", name]) => {
                    out.misspelt
                        .insert((*name).to_owned(), format!("[profile {name}]"));
                    None
                }
                // `[sso-session x]`, `[services x]`: not profiles.
                _ => None,
            };
            if let Some(name) = &current {
                out.profiles.entry(name.clone()).or_default();
            }
            continue;
        }
        // Continuation lines belong to a nested setting this chain does not read.
        if raw.starts_with(char::is_whitespace) {
            continue;
        }
        if let (Some(name), Some((k, v))) = (&current, line.split_once('=')) {
            out.profiles
                .entry(name.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    out
}

/// The config and credentials file paths: the override variables, else `~/.aws/…`.
pub(crate) fn paths(env: &AwsEnvironment) -> (Option<PathBuf>, Option<PathBuf>) {
    let path = |var: &str, default: &str| match env.var(var) {
        Some(p) => Some(env.expand(p)),
        None => env.home().map(|h| h.join(".aws").join(default)),
    };
    (
        path("AWS_CONFIG_FILE", "config"),
        path("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
    )
}

/// A file's text; a missing file is empty, as for the SDKs.
fn read(path: Option<&Path>, profile: &str) -> Result<Option<String>, ExecError> {
    let Some(path) = path else { return Ok(None) };
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ExecError::Secret {
            reference: format!("aws profile {profile}"),
            detail: format!("read {}: {e}", path.display()),
        }),
    }
}

/// Both files, parsed.
#[derive(Debug, Default)]
pub(crate) struct Files {
    config: Parsed,
    credentials: Parsed,
    config_path: Option<PathBuf>,
    credentials_path: Option<PathBuf>,
}

impl Files {
    /// Reads the config and credentials files the environment points at.
    pub(crate) fn load(env: &AwsEnvironment) -> Result<Self, ExecError> {
        let name = env.var("AWS_PROFILE").unwrap_or("default");
        let (config_path, credentials_path) = paths(env);
        let config = read(config_path.as_deref(), name)?
            .map(|t| parse(&t, FileKind::Config))
            .unwrap_or_default();
        let credentials = read(credentials_path.as_deref(), name)?
            .map(|t| parse(&t, FileKind::Credentials))
            .unwrap_or_default();
        Ok(Self {
            config,
            credentials,
            config_path,
            credentials_path,
        })
    }

    /// The keys of profile `name` from both files, the credentials file winning.
    pub(crate) fn get(&self, name: &str) -> Option<Keys> {
        let mut keys = self.config.profiles.get(name).cloned();
        if let Some(more) = self.credentials.profiles.get(name) {
            keys.get_or_insert_with(Keys::new).extend(more.clone());
        }
        keys
    }

    /// Both paths, for errors.
    pub(crate) fn describe(&self) -> String {
        let shown = |p: &Option<PathBuf>| {
            p.as_ref().map_or_else(
                || "(no home directory)".to_owned(),
                |p| p.display().to_string(),
            )
        };
        format!(
            "{} or {}",
            shown(&self.config_path),
            shown(&self.credentials_path)
        )
    }
}

/// The profile named by `AWS_PROFILE` (else `default`), keys of both files merged.
/// A profile named explicitly that exists in neither file is an error naming it; a
/// missing `default` only means this source has nothing.
pub(crate) fn select(env: &AwsEnvironment, all: &Files) -> Result<Selected, ExecError> {
    let explicit = env.var("AWS_PROFILE");
    let name = explicit.unwrap_or("default");
    if let Some(keys) = all.get(name) {
        return Ok(Selected::Found {
            name: name.to_owned(),
            keys,
        });
    }
    let (config, credentials) = (&all.config, &all.credentials);
    let files = all.describe();
    if explicit.is_none() {
        return Ok(Selected::Absent(format!("no [default] profile in {files}")));
    }
    let hint = match (config.misspelt.get(name), credentials.misspelt.get(name)) {
        (Some(s), _) => format!("; the config file spells it `{s}`, expected `[profile {name}]`"),
        (None, Some(s)) => format!("; the credentials file spells it `{s}`, expected `[{name}]`"),
        (None, None) => {
            let known: std::collections::BTreeSet<&str> = config
                .profiles
                .keys()
                .chain(credentials.profiles.keys())
                .map(String::as_str)
                .collect();
            format!(
                "; profiles found: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.into_iter().collect::<Vec<_>>().join(", ")
                }
            )
        }
    };
    Err(ExecError::Secret {
        reference: format!("aws profile {name}"),
        detail: format!("AWS_PROFILE names profile `{name}`, which is not in {files}{hint}"),
    })
}

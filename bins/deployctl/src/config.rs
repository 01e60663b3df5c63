//! The config file (`~/.config/deployctl/config.toml` or `--config`): server and token, below flags and environment variables.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::exit::{CliError, USAGE};

/// The server when no flag, variable or file names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The config file's keys; unknown keys are errors (typos).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// deployd's base URL, e.g. `http://127.0.0.1:8080`.
    pub server: Option<String>,
    /// An API token (`dpl_…`).
    pub token: Option<String>,
    /// A PEM CA certificate to trust for an `https://` server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Send the token over plain `http://` to a server that is not on loopback.
    pub allow_insecure_http: Option<bool>,
}

/// Where the server and the token come from, resolved and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub server: String,
    pub token: Option<String>,
}

/// The default config path: `$XDG_CONFIG_HOME/deployctl/config.toml`, else `$HOME/.config/deployctl/config.toml`.
pub fn default_path(xdg_config_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    let base = match (xdg_config_home, home) {
        (Some(x), _) if !x.is_empty() => PathBuf::from(x),
        (_, Some(h)) if !h.is_empty() => Path::new(h).join(".config"),
        _ => return None,
    };
    Some(base.join("deployctl").join("config.toml"))
}

/// Reads the config file: `explicit` (`--config`, `DEPLOYCTL_CONFIG`) must exist; the default path may not.
pub fn load(explicit: Option<&Path>, default: Option<&Path>) -> Result<ConfigFile, CliError> {
    let (path, required) = match (explicit, default) {
        (Some(p), _) => (p, true),
        (None, Some(p)) => (p, false),
        (None, None) => return Ok(ConfigFile::default()),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ConfigFile::default());
        }
        Err(e) => {
            return Err(CliError::new(
                USAGE,
                format!("cannot read the config file {}: {e}", path.display()),
            ));
        }
    };
    warn_if_readable_by_others(path);
    parse(&text).map_err(|e| CliError::new(USAGE, format!("config file {}: {e}", path.display())))
}

/// Parses and validates a config file's text.
pub fn parse(text: &str) -> Result<ConfigFile, String> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
    if let Some(s) = &file.server {
        validate_server(s).map_err(|e| format!("key `server`: {e}"))?;
    }
    if let Some(t) = &file.token {
        validate_token(t).map_err(|e| format!("key `token`: {e}"))?;
    }
    Ok(file)
}

/// Flags and environment variables (`flag_or_env`, as clap resolved them) win over the file.
/// `allow_insecure_http` (the flag or its variable) or the file's key lets a plain
/// `http://` server off loopback through.
pub fn resolve(
    server_flag_or_env: Option<String>,
    token_flag_or_env: Option<String>,
    allow_insecure_http: bool,
    file: ConfigFile,
) -> Result<Settings, CliError> {
    let server = server_flag_or_env
        .or(file.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    validate_server(&server).map_err(|e| CliError::new(USAGE, format!("--server: {e}")))?;
    if !(allow_insecure_http || file.allow_insecure_http.unwrap_or(false)) {
        refuse_plain_http_off_loopback(&server)?;
    }
    let token = token_flag_or_env.or(file.token);
    if let Some(t) = &token {
        validate_token(t).map_err(|e| CliError::new(USAGE, format!("--token: {e}")))?;
    }
    Ok(Settings { server, token })
}

fn validate_server(server: &str) -> Result<(), String> {
    let rest = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("https://"))
        .ok_or_else(|| format!("`{server}` is not an http:// or https:// URL"))?;
    if rest.trim_end_matches('/').is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("`{server}` has no host, or contains whitespace"));
    }
    Ok(())
}

/// Plain `http://` to another host would carry the bearer token (and every answer)
/// in clear: refused before any connection, naming the URL and the way out. The
/// loopback rule is deploy-agent's (`deploy_core::is_loopback_host`).
fn refuse_plain_http_off_loopback(server: &str) -> Result<(), CliError> {
    // `validate_server` accepted it; a URL `HttpUrl` refuses (user info, a bad port)
    // is left to the HTTP client's own error, unless it is plainly remote.
    let loopback = match deploy_core::HttpUrl::parse(server.trim_end_matches('/')) {
        Ok(url) => url.is_https() || url.is_loopback(),
        Err(_) => !server.starts_with("http://"),
    };
    if loopback {
        return Ok(());
    }
    Err(CliError::new(
        USAGE,
        format!(
            "server `{server}` is plain http on a non-loopback host: the API token would travel \
             in clear; use https:// (with --ca-file for a private CA), or accept the risk with \
             --allow-insecure-http (DEPLOYCTL_ALLOW_INSECURE_HTTP=true, or \
             `allow_insecure_http = true` in the config file)"
        ),
    ))
}

/// Never echoes the token itself.
fn validate_token(token: &str) -> Result<(), String> {
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        return Err("the token is empty or contains whitespace".to_owned());
    }
    Ok(())
}

/// A token in a file others can read is a leak waiting to happen: say so (on stderr).
#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "deployctl: warning: {} is readable by other users; `chmod 600` it if it holds a token",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_win_over_the_file_which_wins_over_the_default() {
        let file = ConfigFile {
            server: Some("https://deploy.example:8443".into()),
            token: Some("dpl_file".into()),
            ca_file: None,
            allow_insecure_http: None,
        };
        let s = resolve(Some("http://flag:1".into()), None, true, file.clone()).unwrap();
        assert_eq!(
            (s.server.as_str(), s.token.as_deref()),
            ("http://flag:1", Some("dpl_file"))
        );
        let s = resolve(None, Some("dpl_env".into()), false, file).unwrap();
        assert_eq!(
            (s.server.as_str(), s.token.as_deref()),
            ("https://deploy.example:8443", Some("dpl_env"))
        );
        let s = resolve(None, None, false, ConfigFile::default()).unwrap();
        assert_eq!((s.server.as_str(), s.token), (DEFAULT_SERVER, None));
    }

    #[test]
    fn plain_http_off_loopback_is_refused_unless_allowed() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.9.9.9:1/",
            "http://localhost:8080",
            "http://[::1]:8080",
            "https://deploy.example:8443",
            "https://10.0.0.5",
        ] {
            assert!(
                resolve(Some(ok.into()), None, false, ConfigFile::default()).is_ok(),
                "{ok}"
            );
        }
        for remote in [
            "http://10.0.0.5:8080",
            "http://deploy.example",
            "http://[::]:8080",
            "http://0.0.0.0:8080",
            "http://localhost.example:80",
            "http://user@10.0.0.5",
        ] {
            let err = resolve(Some(remote.into()), None, false, ConfigFile::default()).unwrap_err();
            assert_eq!(err.code, USAGE, "{remote}");
            let text = err.to_string();
            assert!(text.contains(&format!("`{remote}`")), "{text}");
            assert!(text.contains("--allow-insecure-http"), "{text}");
            assert!(text.contains("DEPLOYCTL_ALLOW_INSECURE_HTTP"), "{text}");
            assert!(text.contains("allow_insecure_http = true"), "{text}");
            // The flag (or its variable), or the file's key, lets it through.
            assert!(resolve(Some(remote.into()), None, true, ConfigFile::default()).is_ok());
            let file = parse("allow_insecure_http = true\n").unwrap();
            assert!(resolve(Some(remote.into()), None, false, file).is_ok());
        }
        // The file's server is checked as well.
        let file = parse("server = \"http://10.1.1.1:8080\"\n").unwrap();
        assert!(resolve(None, None, false, file).is_err());
    }

    #[test]
    fn bad_files_fail_with_the_key_and_never_the_token() {
        let check = |text: &str, expected: &str| {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains("s3cret x"), "{err}");
        };
        check(
            "server = \"ftp://x\"",
            "key `server`: `ftp://x` is not an http:// or https:// URL",
        );
        check(
            "token = \"s3cret x\"",
            "key `token`: the token is empty or contains whitespace",
        );
        check("sever = \"http://x\"", "unknown field `sever`");
        check("server = ", "");
        assert_eq!(
            parse("server = \"http://h:1\"\ntoken = \"dpl_x\"\nca_file = \"/etc/ca.pem\"\n")
                .unwrap(),
            ConfigFile {
                server: Some("http://h:1".into()),
                token: Some("dpl_x".into()),
                ca_file: Some("/etc/ca.pem".into()),
                allow_insecure_http: None,
            }
        );
        let err = resolve(
            Some("localhost:8080".into()),
            None,
            false,
            ConfigFile::default(),
        )
        .unwrap_err();
        assert_eq!(err.code, USAGE);
    }

    #[test]
    fn the_default_file_may_be_missing_an_explicit_one_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        assert_eq!(load(None, Some(&missing)).unwrap(), ConfigFile::default());
        let err = load(Some(&missing), None).unwrap_err();
        assert_eq!(err.code, USAGE);
        assert!(err.to_string().contains("none.toml"), "{err}");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "token = \"dpl_from_file\"\n").unwrap();
        assert_eq!(
            load(Some(&path), None).unwrap().token.as_deref(),
            Some("dpl_from_file")
        );
        std::fs::write(&path, "token = 3\n").unwrap();
        let err = load(None, Some(&path)).unwrap_err();
        assert!(err.to_string().contains("config.toml"), "{err}");
        assert_eq!(
            default_path(Some("/x"), Some("/home/u")),
            Some(PathBuf::from("/x/deployctl/config.toml"))
        );
        assert_eq!(
            default_path(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.config/deployctl/config.toml"))
        );
        assert_eq!(default_path(None, None), None);
    }
}

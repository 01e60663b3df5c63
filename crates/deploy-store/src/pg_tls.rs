//! The TLS settings of a PostgreSQL url (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), checked before connecting.
//!
//! sqlx parses these itself, but reports a missing CA file as a bare I/O error (no
//! path, and classified like a network failure), and an `sslrootcert` file without
//! any certificate is silently ignored, leaving only the public web roots. Checking
//! them here names the setting and the file, once, at start-up.

use std::path::Path;

use crate::errors::StoreError;

/// The `sslmode` values sqlx accepts (libpq's, `allow` behaving as `disable`).
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// What the url says about TLS, once checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// A CA was given (`sslrootcert`). With it, `sslmode=require` verifies the
    /// chain as libpq does (`verify-ca`); sqlx alone would accept any certificate.
    pub(crate) root_cert: bool,
}

/// Checks the TLS query parameters of `url` (sqlx's spellings included): a known
/// `sslmode`, and readable files for `sslrootcert` (holding at least one PEM
/// certificate), `sslcert` and `sslkey`. A url that does not parse is left for sqlx to report.
pub(crate) fn check(url: &str) -> Result<TlsSettings, StoreError> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(TlsSettings::default());
    };
    let mut settings = TlsSettings::default();
    for (key, value) in parsed.query_pairs() {
        let bad = |problem: String| StoreError::TlsSetting {
            key: key.to_string(),
            value: value.to_string(),
            problem,
        };
        match &*key {
            "sslmode" | "ssl-mode" if !SSL_MODES.contains(&value.to_ascii_lowercase().as_str()) => {
                return Err(bad(format!(
                    "is not a TLS mode; expected one of {}",
                    SSL_MODES.join(", ")
                )));
            }
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => {
                settings.root_cert = true;
                let pem = if inline_pem(&value) {
                    value.to_string()
                } else {
                    read(&value).map_err(bad)?
                };
                if !pem.contains(PEM_CERTIFICATE) {
                    return Err(bad(format!(
                        "holds no PEM certificate (no `{PEM_CERTIFICATE}` line)"
                    )));
                }
            }
            "sslcert" | "ssl-cert" | "sslkey" | "ssl-key" if !inline_pem(&value) => {
                read(&value).map_err(bad)?;
            }
            _ => {}
        }
    }
    Ok(settings)
}

const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

/// sqlx's rule for a value that is PEM text rather than a file name.
fn inline_pem(value: &str) -> bool {
    let value = value.trim();
    value.starts_with("-----BEGIN") && value.ends_with("-----")
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read(Path::new(path))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|e| format!("names a file that cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check(url)`: Ok with whether a CA was given, or the error message.
    fn check_msg(url: &str) -> Result<bool, String> {
        check(url).map(|s| s.root_cert).map_err(|e| e.to_string())
    }

    #[test]
    fn modes_and_files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            format!("{PEM_CERTIFICATE}\nMIIB\n-----END CERTIFICATE-----\n"),
        )
        .unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let (ca, empty, missing) = (ca.display(), empty.display(), missing.display());
        let base = "postgres://app@db.example:5432/deploy";

        assert_eq!(check_msg(base), Ok(false));
        assert_eq!(check_msg(&format!("{base}?sslmode=verify-full")), Ok(false));
        assert_eq!(check_msg(&format!("{base}?sslmode=VERIFY-CA")), Ok(false));
        assert_eq!(
            check_msg(&format!("{base}?sslmode=verify-full&sslrootcert={ca}")),
            Ok(true)
        );
        assert_eq!(check_msg(&format!("{base}?ssl-ca={ca}")), Ok(true));
        assert_eq!(
            check_msg(&format!("{base}?sslmode=verify_full")),
            Err(
                "`sslmode=verify_full` in the database url is not a TLS mode; expected one of \
                 disable, allow, prefer, require, verify-ca, verify-full"
                    .to_owned()
            )
        );
        let err =
            check_msg(&format!("{base}?sslmode=verify-full&sslrootcert={missing}")).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "`sslrootcert={missing}` in the database url names a file that cannot be read: "
            )),
            "{err}"
        );
        assert_eq!(
            check_msg(&format!("{base}?sslrootcert={empty}")),
            Err(format!(
                "`sslrootcert={empty}` in the database url holds no PEM certificate \
                 (no `{PEM_CERTIFICATE}` line)"
            ))
        );
        let err = check_msg(&format!("{base}?sslcert={ca}&sslkey={missing}")).unwrap_err();
        assert!(
            err.starts_with(&format!("`sslkey={missing}` in the database url")),
            "{err}"
        );
        // PEM text in place of a file name, as sqlx allows.
        let pem = format!("{PEM_CERTIFICATE}\nMIIB\n-----END CERTIFICATE-----");
        let inline: String = url::form_urlencoded::byte_serialize(pem.as_bytes()).collect();
        assert_eq!(check_msg(&format!("{base}?sslrootcert={inline}")), Ok(true));
        // Percent-encoded paths are decoded, as sqlx does.
        let encoded = ca.to_string().replace('/', "%2F");
        assert_eq!(
            check_msg(&format!("{base}?sslrootcert={encoded}")),
            Ok(true)
        );
    }
}

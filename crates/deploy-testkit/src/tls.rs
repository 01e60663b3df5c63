//! `TestCertificates`: a private CA and a 127.0.0.1 server certificate it signed, made with the openssl CLI, for TLS tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::errors::TestkitError;
use crate::process::require_program;

/// PEM files in one directory: `ca.pem` (+ `ca.key`), and `leaf.pem` / `leaf.key`
/// for `127.0.0.1` (subjectAltName IP, serverAuth), P-256, valid for 2 days.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA certificate a client must be given to trust the server.
    pub ca: PathBuf,
    /// The server certificate (signed by the CA).
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
}

impl TestCertificates {
    /// Makes the CA and the server certificate in `dir` (which must exist).
    pub fn create(dir: &Path) -> Result<Self, TestkitError> {
        let openssl = require_program("openssl", &["/usr/bin"], "`apt-get install openssl`")?;
        let run = |args: &[&str]| -> Result<(), TestkitError> {
            let out = Command::new(&openssl)
                .current_dir(dir)
                .args(args)
                .output()
                .map_err(TestkitError::io(format!("run openssl {}", args[0])))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(TestkitError::NotReady {
                    what: format!("openssl {args:?}"),
                    seconds: 0,
                    detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
            }
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let days = ["-days", "2"];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &days,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=deploy-test-ca",
            ],
        ]
        .concat())?;
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat())?;
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(TestkitError::io("write the certificate extensions"))?;
        run(&[
            &[
                "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            ][..],
            &["-CAcreateserial", "-out", "leaf.pem", "-extfile", "ext"],
            &days,
        ]
        .concat())?;
        Ok(Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("leaf.pem"),
            key: dir.join("leaf.key"),
        })
    }
}

//! `--ca-file`: the agent's client trusts a private CA only when given its PEM (a real TLS server: `openssl s_server`).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a panic there is a failing test"
)]

use deploy_agent::client::{Client, ClientError, Secret};

/// A TLS endpoint answering every request with a 401 problem document.
async fn refusing_tls_server(dir: &std::path::Path) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"agent credential revoked"}"#;
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_through_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    deploy_testkit::TestCertificates::create(dir.path()).unwrap();
    let port = refusing_tls_server(dir.path()).await;
    let server = format!("https://127.0.0.1:{port}");
    let bearer = Secret::new("dpa_tls_secret");

    // Without the CA the handshake fails: a transport error (retried by the agent).
    let plain = Client::new(&server, None).unwrap();
    let err = plain.rotate(&bearer, None).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(!err.to_string().contains("dpa_tls_secret"));

    // With it the request gets through, and the problem's detail is what the agent shows.
    let trusting = Client::new(&server, Some(&dir.path().join("ca.pem"))).unwrap();
    let err = trusting.rotate(&bearer, None).await.unwrap_err();
    assert_eq!(
        err,
        ClientError::Unauthorized {
            what: "rotate the credential".to_owned(),
            detail: "agent credential revoked".to_owned()
        }
    );
}

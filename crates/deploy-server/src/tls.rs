//! HTTPS for the API: a rustls [`TlsListener`] that `axum::serve` accepts, loading a PEM certificate chain and private key.
//!
//! Handshakes run in their own tasks (bounded by [`HANDSHAKE_TIMEOUT`]) so one slow
//! or hostile client cannot hold up the accept loop; only finished handshakes reach
//! the server. Agents behind NAT connect out to this listener; a self-signed setup
//! gives its CA to `deploy-agent --ca-file`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const ACCEPT_QUEUE: usize = 256;

/// Why the TLS configuration cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("read {what} `{path}`: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse the certificate chain `{path}`: {detail}; expected PEM `CERTIFICATE` blocks")]
    Certificates { path: PathBuf, detail: String },
    #[error(
        "parse the private key `{path}`: {detail}; expected one PEM private key (PKCS#8, PKCS#1 or SEC1)"
    )]
    Key { path: PathBuf, detail: String },
    #[error("use certificate `{cert}` with key `{key}`: {detail}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
}

/// Builds the TLS acceptor from a PEM certificate chain (leaf first) and its private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let chain_pem = read("certificate chain", cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificates {
            path: cert.to_owned(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificates {
            path: cert.to_owned(),
            detail: "no certificate found".to_owned(),
        });
    }
    let key_pem = read("private key", key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        detail: e.to_string(),
    })?;
    // The provider is named rather than taken from the process default: more than
    // one rustls backend is linked in, and then no default exists.
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config_error = |detail: String| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        detail,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| config_error(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TCP listener whose connections come out TLS-terminated, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp`; handshakes run in the background.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (send, ready) = mpsc::channel(ACCEPT_QUEUE);
        let accept_loop = tokio::spawn(accept_loop(tcp, acceptor, send));
        Ok(Self {
            ready,
            local,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accepting a tcp connection failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop never ends on its own; it only stops when this listener
            // is dropped, so there is nothing more to accept.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_https_to_clients_that_trust_the_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        deploy_testkit::TestCertificates::create(dir.path()).unwrap();
        let acceptor =
            tls_acceptor(&dir.path().join("leaf.pem"), &dir.path().join("leaf.key")).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = TlsListener::new(tcp, acceptor).unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("https://{addr}/healthz");

        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let trusting = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let answer = trusting.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "ok");

        // A client without the CA refuses the certificate; a plain-HTTP client gets no answer.
        let err = reqwest::Client::new().get(&url).send().await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let plain = reqwest::Client::new()
            .get(format!("http://{addr}/healthz"))
            .send()
            .await;
        assert!(plain.is_err(), "plain http must not be served: {plain:?}");
        // The server still serves after the failed handshakes.
        assert_eq!(trusting.get(&url).send().await.unwrap().status(), 200);
        server.abort();
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = tls_acceptor(&missing, &missing).err().unwrap();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a pem").unwrap();
        let err = tls_acceptor(&junk, &junk).err().unwrap();
        assert!(
            err.to_string().contains("junk.pem") && err.to_string().contains("expected PEM"),
            "{err}"
        );
        deploy_testkit::TestCertificates::create(dir.path()).unwrap();
        let err = tls_acceptor(&dir.path().join("leaf.pem"), &dir.path().join("ca.key"))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("ca.key"),
            "a key that does not match the certificate: {err}"
        );
    }
}

/// The peer address of a connection, for handlers and the audit log: serve the router
/// with `into_make_service_with_connect_info::<PeerAddr>()` over TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

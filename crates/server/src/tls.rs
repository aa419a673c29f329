//! TLS for HTTP, websockets and gRPC, from a PEM certificate chain and key
//! that are read again when they change on disk, so a renewed certificate
//! is served without a restart.
//!
//! The current certificate lives in a [`CertStore`]: the handshake of every
//! new connection asks it for the certificate, and a watcher task replaces
//! it when the files' modification times or sizes change. A file that does
//! not load (half written, wrong key) keeps the old certificate and is tried
//! again at the next change. Open connections keep the certificate they
//! started with.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use prometheus_client::metrics::{counter::Counter, family::Family};
use rustls::{
    ServerConfig,
    crypto::ring::{default_provider, sign::any_supported_type},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

type Labels = [(&'static str, &'static str); 1];

/// How often the files are looked at for a change.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Where the PEM files are (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM section.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key does not fit a supported algorithm or the certificate.
    #[error("{0}")]
    Key(#[from] rustls::Error),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|error| file_error(&files.cert, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(&files.cert, error))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert, "no CERTIFICATE section"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| file_error(&files.key, error))?;
    let certified = CertifiedKey::new(chain, any_supported_type(&key)?);
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

/// What identifies a version of the files on disk.
fn stamp(files: &TlsFiles) -> Option<[(SystemTime, u64); 2]> {
    let one = |path: &Path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    Some([one(&files.cert)?, one(&files.key)?])
}

/// The certificate that new handshakes get.
#[derive(Debug)]
pub(crate) struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the files once; a node does not start without them.
    pub(crate) fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let current = RwLock::new(load(&files)?);
        Ok(Self { files, current })
    }

    fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = key;
    }

    /// Reloads the files whenever they change, until `shutdown`; counts each
    /// attempt in `reloads` by result.
    pub(crate) async fn watch(self: Arc<Self>, reloads: Family<Labels, Counter>, shutdown: CancellationToken) {
        let mut seen = stamp(&self.files);
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp(&self.files);
            if now == seen {
                continue;
            }
            seen = now;
            match load(&self.files) {
                Ok(key) => {
                    self.replace(key);
                    reloads.get_or_create(&[("result", "ok")]).inc();
                    info!(cert = %self.files.cert.display(), "tls certificate reloaded");
                }
                Err(error) => {
                    reloads.get_or_create(&[("result", "error")]).inc();
                    warn!(%error, "tls files changed but do not load; keeping the current certificate");
                }
            }
        }
    }

    /// An acceptor offering `alpn` protocols, in order of preference.
    pub(crate) fn acceptor(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

/// ALPN of the HTTP listener: HTTP/2, then HTTP/1.1.
pub(crate) const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the gRPC listener.
pub(crate) const GRPC_ALPN: &[&[u8]] = &[b"h2"];

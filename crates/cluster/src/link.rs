//! The way to another node's gRPC server, shared by everything that talks to
//! peers over it: full-state pulls here, history replication elsewhere.
//!
//! A [`PeerLink`] holds the two things every such call needs and nobody
//! should rebuild: the [`Sealer`] (so bodies are authenticated with the
//! cluster secret) and, when the cluster serves gRPC over TLS, the connector
//! that speaks it (see `sync_tls` for why certificates are not checked).

use std::{net::SocketAddr, time::Duration};

use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::{envelope::Sealer, sync_tls};

/// How long opening a channel to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Seals messages for peers and opens channels to their gRPC servers.
#[derive(Clone)]
pub struct PeerLink {
    sealer: Sealer,
    tls: Option<TlsConnector>,
}

impl PeerLink {
    pub(crate) fn new(sealer: Sealer, tls: Option<TlsConnector>) -> Self {
        Self { sealer, tls }
    }

    /// Seals and opens the bodies of messages between nodes.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Connects to the gRPC server at `addr` (over TLS when the cluster
    /// serves it); every call on the channel fails after `timeout`.
    pub async fn channel(&self, addr: SocketAddr, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout);
        match &self.tls {
            None => endpoint.connect().await,
            Some(tls) => {
                let tls = tls.clone();
                let connect = tower::service_fn(move |_| {
                    let tls = tls.clone();
                    async move { sync_tls::connect(&tls, addr).await.map(TokioIo::new) }
                });
                endpoint.connect_with_connector(connect).await
            }
        }
    }
}

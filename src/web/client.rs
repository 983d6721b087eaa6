//! The HTTP client the dashboard reads the other workers' APIs with.
//!
//! Owns: [`PeerClient`], a pooled hyper client (HTTP/1.1, no TLS: workers
//! talk on the cluster's trusted network) whose every request is bounded by a
//! timeout.
//! Must never: send anything but GET, or wait on a peer longer than its
//! timeout (a killed worker must not stall the page).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::Uri;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

/// GETs JSON from other workers.
#[derive(Debug, Clone)]
pub(crate) struct PeerClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl PeerClient {
    /// A client whose requests (connect, answer and body) take at most `timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        PeerClient { client, timeout }
    }

    /// `GET http://{addr}{path}` decoded as JSON; the error in words.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
    ) -> Result<T, String> {
        let uri: Uri = format!("http://{addr}{path}")
            .parse()
            .map_err(|e| format!("bad address {addr:?}: {e}"))?;
        let fetch = async {
            let resp = self.client.get(uri).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}

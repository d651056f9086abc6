//! HTTP requests Herald makes to others (webhooks to the app's backend, JWKS from its identity
//! provider): one way to build the client — hyper over rustls with ring (the NATS client's
//! provider, so no second crypto provider is linked) and the system's roots — and one way to
//! make a request: within a timeout, reading at most a bounded body.

use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A client for `http://` and `https://` URLs; cheap to clone (the connection pool is shared).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client, for requests to the URL of `setting` (named in the error).
pub fn client(setting: &str) -> anyhow::Result<HttpClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .with_context(|| format!("{setting}: cannot load the system's root certificates"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// The User-Agent of every request.
pub const USER_AGENT: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));

/// Sends `request` and reads the whole answer, within `timeout`; an answer longer than
/// `max_body` bytes is an error (read no further). `setting` names the URL in errors.
pub async fn exchange(
    client: &HttpClient,
    request: hyper::Request<Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
    setting: &str,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        // Read to the end, so the connection can serve the next request.
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?;
        anyhow::Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{setting} did not answer within {timeout:?}"))?
        .with_context(|| format!("requesting {setting}"))
}

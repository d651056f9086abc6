//! JWKS sources: a file (`HERALD_JWKS_FILE`) or the identity provider's URL
//! (`HERALD_JWKS_URL`), loaded in the background every `HERALD_JWKS_REFRESH_S`, and early —
//! at most once per [`EARLY_REFRESH_EVERY`] — when a token names a `kid` no key has, so a
//! new key is taken up at once. A failed load keeps the keys last loaded; a key that cannot
//! be used is skipped with a log line, the others still load.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;
use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;

use super::keys::VerifyingKey;
use crate::metrics;
use crate::outbound::{self, HttpClient};

/// The most often a token naming an unknown `kid` makes a source load early: whoever sends
/// such tokens cannot make Herald fetch more often than this.
pub const EARLY_REFRESH_EVERY: Duration = Duration::from_secs(10);

/// How long the identity provider has to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest JWKS read: sets of a few keys are a few KiB.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The first wait before trying a source again that never loaded; it doubles up to the
/// refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Where a set comes from.
enum Origin {
    File(PathBuf),
    /// Boxed: a client is large, and a source holds one origin for its life.
    Url {
        client: Box<HttpClient>,
        url: hyper::Uri,
    },
}

/// One JWKS source and the keys it last loaded.
pub struct JwksSource {
    origin: Origin,
    /// `file` or `url`: the metrics' label and the logs' name.
    label: &'static str,
    /// The keys of the last good load, swapped whole.
    keys: RwLock<Arc<Vec<VerifyingKey>>>,
    /// Whether one load succeeded: until then a URL source holds readiness back.
    loaded: AtomicBool,
    /// When the last early load started. Async, so that tokens arriving while it runs wait
    /// for it rather than start their own.
    last_early: tokio::sync::Mutex<Option<Instant>>,
}

/// A JWKS document: its keys are read one by one, so one odd key does not spoil the set.
#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

impl JwksSource {
    /// The file source, loaded now: a file that cannot be read at start is a configuration
    /// error.
    pub fn file(path: PathBuf) -> anyhow::Result<JwksSource> {
        let keys = read_file(&path)?;
        let source = JwksSource::new(Origin::File(path), "file");
        source.install(keys);
        Ok(source)
    }

    /// The URL source, empty until its first load (see [`JwksSource::refresh_forever`]).
    pub fn url(url: hyper::Uri) -> anyhow::Result<JwksSource> {
        let client = Box::new(outbound::client("HERALD_JWKS_URL")?);
        Ok(JwksSource::new(Origin::Url { client, url }, "url"))
    }

    fn new(origin: Origin, label: &'static str) -> JwksSource {
        JwksSource {
            origin,
            label,
            keys: RwLock::new(Arc::new(Vec::new())),
            loaded: AtomicBool::new(false),
            last_early: tokio::sync::Mutex::new(None),
        }
    }

    /// The keys of the last good load.
    pub fn keys(&self) -> Arc<Vec<VerifyingKey>> {
        self.keys
            .read()
            .expect("never poisoned: no panics inside")
            .clone()
    }

    /// Whether the source has loaded once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Loads the set; on failure logs, counts, and keeps the keys last loaded. True if loaded.
    pub async fn refresh(&self) -> bool {
        let loaded = match &self.origin {
            Origin::File(path) => read_file(path),
            Origin::Url { client, url } => fetch(client, url).await.and_then(|b| parse(&b)),
        };
        match loaded {
            Ok(keys) => {
                tracing::debug!(source = self.label, keys = keys.len(), "JWKS loaded");
                self.install(keys);
                true
            }
            Err(error) => {
                metrics::global().jwks.loaded(self.label, None);
                tracing::warn!(source = self.label, error = %format!("{error:#}"),
                    "cannot load the JWKS; keeping the keys last loaded");
                false
            }
        }
    }

    /// Loads early, for a token naming an unknown `kid`, unless an early load began less
    /// than [`EARLY_REFRESH_EVERY`] ago. True if it loaded.
    pub async fn refresh_early(&self) -> bool {
        let mut last = self.last_early.lock().await;
        if last.is_some_and(|at| at.elapsed() < EARLY_REFRESH_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        self.refresh().await
    }

    /// Loads every `every` for the life of the process; a source that never loaded is tried
    /// sooner, from a second up, so readiness comes soon after the provider does.
    pub async fn refresh_forever(self: Arc<Self>, every: Duration) {
        let mut wait = FIRST_RETRY.min(every);
        loop {
            if !self.is_loaded() {
                self.refresh().await;
            }
            if self.is_loaded() {
                tokio::time::sleep(every).await;
                self.refresh().await;
            } else {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(every);
            }
        }
    }

    fn install(&self, keys: Vec<VerifyingKey>) {
        metrics::global().jwks.loaded(self.label, Some(keys.len()));
        *self.keys.write().expect("never poisoned: no panics inside") = Arc::new(keys);
        self.loaded.store(true, Ordering::Release);
    }
}

/// Reads a JWKS file: small and local, read in place (not worth a thread of its own).
fn read_file(path: &Path) -> anyhow::Result<Vec<VerifyingKey>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("HERALD_JWKS_FILE: cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("HERALD_JWKS_FILE {}", path.display()))
}

/// GETs the set, 2xx only, within [`FETCH_TIMEOUT`] and at most [`MAX_JWKS_BYTES`].
async fn fetch(client: &HttpClient, url: &hyper::Uri) -> anyhow::Result<Bytes> {
    let request = hyper::Request::get(url.clone())
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, outbound::USER_AGENT)
        .body(Full::new(Bytes::new()))
        .context("building the JWKS request")?;
    let setting = "HERALD_JWKS_URL";
    let (status, body) =
        outbound::exchange(client, request, FETCH_TIMEOUT, MAX_JWKS_BYTES, setting).await?;
    anyhow::ensure!(status.is_success(), "{setting} answered {status}");
    Ok(body)
}

/// The usable keys of a JWKS document; a set with none is an error (the last good set is
/// better than nothing).
fn parse(bytes: &[u8]) -> anyhow::Result<Vec<VerifyingKey>> {
    let document: Document =
        serde_json::from_slice(bytes).context("is not a JWKS (`{\"keys\": [...]}`)")?;
    let keys: Vec<VerifyingKey> = document
        .keys
        .into_iter()
        .enumerate()
        .filter_map(|(at, value)| {
            let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            let key = serde_json::from_value::<Jwk>(value)
                .map_err(|_| "is not a JWK".to_owned())
                .and_then(|jwk| VerifyingKey::from_jwk(&jwk));
            key.inspect_err(|problem| {
                tracing::warn!(key = at, kid, problem, "JWKS key skipped");
            })
            .ok()
        })
        .collect();
    anyhow::ensure!(
        !keys.is_empty(),
        "holds no key Herald can verify tokens with"
    );
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_keys_are_skipped_and_a_set_without_any_is_refused() {
        let ed = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let document = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "weird"},
            ed,
        ]});
        let keys = parse(document.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ed"));
        assert!(parse(br#"{"keys": [{"kty": "weird"}]}"#).is_err());
        assert!(parse(b"<html>").is_err());
    }
}

//! Webhooks: events posted to the app's backend, at least once, signed, never on the send
//! path.
//!
//! Events are recorded in PostgreSQL's webhook outbox (`store::webhooks`): messages stored and
//! group events in the very transaction that commits them (so a crash loses none), users
//! coming and going as the directory sees them. Deliverers on each node claim the oldest due
//! events, post them in batches, and retire them once the backend answers 2xx; a failure
//! leaves them for a retry after a doubling, capped wait. Nothing waits for the backend but
//! the deliverers, so a slow or dead backend only grows the backlog (`/metrics` shows it).
//!
//! - `signature`: the `Herald-Signature` header.
//! - `presence`: users' first session coming online on the node, and their last going.

mod presence;
mod signature;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;
use rand::Rng;
use serde::Serialize;
use serde_json::value::RawValue;

pub use presence::{UserPresence, RECORD_EVERY as PRESENCE_RECORD_EVERY};
pub use signature::{Signer, HEADER as SIGNATURE_HEADER};

use crate::config::WebhooksConfig;
use crate::metrics;
use crate::model::ids::now_ms;
use crate::outbound::{self, HttpClient};
use crate::store::{OutboxEvent, Store};

/// How long a deliverer with nothing due waits before looking again: the latency of an event
/// recorded while the outbox was empty.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// The first wait after a failed delivery; it doubles with each failure in a row.
const RETRY_FIRST: Duration = Duration::from_millis(500);

/// How often the backlog's size and age are read for `/metrics`.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// The most of a backend's answer read: its status is what counts, the body is only drained.
const ANSWER_MAX_BYTES: usize = 1 << 20;

/// The setting the backend's URL comes from, as errors name it.
const URL_SETTING: &str = "HERALD_WEBHOOK_URL";

/// One request's body: `{"events": [...]}`.
#[derive(Serialize)]
struct Batch<'a> {
    events: Vec<Delivery<'a>>,
}

/// An event as the backend receives it.
#[derive(Serialize)]
struct Delivery<'a> {
    /// The delivery id: the same for every retry of this event, so duplicates can be dropped.
    id: i64,
    #[serde(rename = "type")]
    kind: &'a str,
    /// When the event was recorded, in milliseconds since the epoch.
    ts: i64,
    /// 1 for the first delivery of the event; more for retries.
    attempt: i32,
    data: &'a RawValue,
}

/// The deliverers of one node.
pub struct Webhooks {
    store: Store,
    client: HttpClient,
    url: hyper::Uri,
    /// How long the backend has to answer.
    timeout: Duration,
    signer: Signer,
    batch: i32,
    /// How long a claim keeps other deliverers off: longer than any request may take.
    lease: Duration,
    retry_max: Duration,
}

impl Webhooks {
    /// The deliverers for `config`'s URL, if it has one.
    pub fn new(store: Store, config: &WebhooksConfig) -> anyhow::Result<Option<Webhooks>> {
        let (Some(url), Some(secret)) = (&config.url, &config.secret) else {
            return Ok(None);
        };
        Ok(Some(Webhooks {
            store,
            client: outbound::client(URL_SETTING)?,
            url: url.expose().parse().context(URL_SETTING)?,
            timeout: config.timeout,
            signer: Signer::new(secret.expose()),
            batch: i32::try_from(config.batch).unwrap_or(i32::MAX),
            lease: config.timeout + Duration::from_secs(2),
            retry_max: config.retry_max,
        }))
    }

    /// Runs `concurrency` deliverers and the backlog's gauges for the life of the process.
    pub fn start(self, concurrency: usize) {
        let webhooks = Arc::new(self);
        for _ in 0..concurrency {
            actix_web::rt::spawn(webhooks.clone().deliver_forever());
        }
        actix_web::rt::spawn(webhooks.watch_backlog());
    }

    async fn deliver_forever(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            let lease_ms = self.lease.as_millis() as i64;
            let events = match self.store.claim_webhooks(self.batch, lease_ms).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim webhook events");
                    tokio::time::sleep(RETRY_FIRST).await;
                    continue;
                }
            };
            if events.is_empty() {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            let posted = self.post(&events).await;
            metrics::global()
                .webhooks
                .posted(events.len(), posted.is_ok());
            match posted {
                Ok(()) => {
                    failures = 0;
                    // Not retired, they are posted again when the lease ends: at least once.
                    if let Err(error) = self.store.webhooks_delivered(&ids).await {
                        tracing::warn!(%error, "cannot retire delivered webhook events");
                    }
                }
                Err(error) => {
                    failures += 1;
                    let wait = self.retry_wait(failures);
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(error = %format!("{error:#}"), failures,
                            retry_in_ms = wait.as_millis() as u64, "webhook delivery failed");
                    }
                    if let Err(error) = self
                        .store
                        .retry_webhooks(&ids, wait.as_millis() as i64)
                        .await
                    {
                        tracing::warn!(%error, "cannot schedule webhook events for a retry");
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The wait after `failures` failed deliveries in a row: doubling, capped, jittered (so
    /// the nodes' deliverers do not come back to a recovering backend all at once).
    fn retry_wait(&self, failures: u32) -> Duration {
        let doubled = RETRY_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(20));
        let cap = doubled.min(self.retry_max);
        cap.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Posts one batch, signed; Ok once the backend answered 2xx.
    async fn post(&self, events: &[OutboxEvent]) -> anyhow::Result<()> {
        let events = events
            .iter()
            .map(|event| {
                Ok(Delivery {
                    id: event.id,
                    kind: &event.kind,
                    ts: event.created_ms,
                    attempt: event.attempts,
                    // Borrowed as recorded: checked to be JSON, not copied.
                    data: serde_json::from_str(&event.data)?,
                })
            })
            .collect::<Result<_, serde_json::Error>>()
            .context("the outbox holds an event that is not JSON")?;
        let batch = Batch { events };
        let body = serde_json::to_vec(&batch).context("encoding the webhook batch")?;
        let now_s = (now_ms() / 1000) as u64;
        let request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, outbound::USER_AGENT)
            .header(SIGNATURE_HEADER, self.signer.sign(now_s, &body))
            .body(Full::new(Bytes::from(body)))
            .context("building the webhook request")?;
        let (status, _) = outbound::exchange(
            &self.client,
            request,
            self.timeout,
            ANSWER_MAX_BYTES,
            URL_SETTING,
        )
        .await?;
        anyhow::ensure!(status.is_success(), "{URL_SETTING} answered {status}");
        Ok(())
    }

    /// Keeps `herald_webhook_pending` and `herald_webhook_oldest_pending_seconds` current.
    async fn watch_backlog(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(BACKLOG_EVERY);
        loop {
            ticks.tick().await;
            match self.store.webhook_backlog().await {
                Ok(backlog) => {
                    let gauges = &metrics::global().webhooks;
                    gauges.pending.set(backlog.pending);
                    gauges.oldest_pending_seconds.set(backlog.oldest_seconds);
                }
                Err(error) => tracing::debug!(%error, "cannot read the webhook backlog"),
            }
        }
    }
}

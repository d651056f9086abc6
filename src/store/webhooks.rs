//! The webhook outbox (`sql/functions/webhooks.sql`): events for the app's backend, recorded
//! with the changes they tell of, claimed and retired by the deliverers.

use super::{timed, Store, StoreError};

/// An event recorded outside a change's own transaction (users coming and going).
pub struct WebhookRecord {
    pub kind: &'static str,
    /// The event's data, as JSON text.
    pub data: String,
}

/// An event claimed for delivery.
pub struct OutboxEvent {
    /// The delivery id: unique, so the backend can drop the duplicates at-least-once brings.
    pub id: i64,
    pub kind: String,
    /// As recorded, byte for byte (bodies stay exactly as they were sent).
    pub data: String,
    /// When the event was recorded, in milliseconds since the epoch.
    pub created_ms: i64,
    /// Deliveries tried so far, this one included.
    pub attempts: i32,
}

/// How far delivery is behind.
pub struct WebhookBacklog {
    pub pending: i64,
    pub oldest_seconds: f64,
}

const RECORD: &str = "SELECT herald_webhook_record($1, $2)";
const CLAIM: &str = "SELECT id, kind, data, created_ms, attempts FROM herald_webhook_claim($1, $2)";
const DELIVERED: &str = "SELECT herald_webhook_delivered($1)";
const RETRY: &str = "SELECT herald_webhook_retry($1, $2)";
const BACKLOG: &str = "SELECT pending, oldest_s FROM herald_webhook_backlog()";

impl Store {
    /// Records events in the outbox (when this node records webhooks at all).
    pub async fn record_webhooks(&self, records: &[WebhookRecord]) -> Result<(), StoreError> {
        let _t = timed("record_webhooks");
        let kinds: Vec<&str> = records.iter().map(|r| r.kind).collect();
        let data: Vec<&str> = records.iter().map(|r| r.data.as_str()).collect();
        let client = self.client().await?;
        let stmt = client.prepare_cached(RECORD).await?;
        client.execute(&stmt, &[&kinds, &data]).await?;
        Ok(())
    }

    /// Claims up to `limit` events due for delivery, oldest first, for `lease_ms`.
    pub async fn claim_webhooks(
        &self,
        limit: i32,
        lease_ms: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let _t = timed("claim_webhooks");
        let client = self.client().await?;
        let stmt = client.prepare_cached(CLAIM).await?;
        Ok(client
            .query(&stmt, &[&limit, &lease_ms])
            .await?
            .iter()
            .map(|row| OutboxEvent {
                id: row.get(0),
                kind: row.get(1),
                data: row.get(2),
                created_ms: row.get(3),
                attempts: row.get(4),
            })
            .collect())
    }

    /// Retires events the backend accepted.
    pub async fn webhooks_delivered(&self, ids: &[i64]) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(DELIVERED).await?;
        client.execute(&stmt, &[&ids]).await?;
        Ok(())
    }

    /// Makes events whose delivery failed due again after `delay_ms`.
    pub async fn retry_webhooks(&self, ids: &[i64], delay_ms: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(RETRY).await?;
        client.execute(&stmt, &[&ids, &delay_ms]).await?;
        Ok(())
    }

    pub async fn webhook_backlog(&self) -> Result<WebhookBacklog, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(BACKLOG).await?;
        let row = client.query_one(&stmt, &[]).await?;
        Ok(WebhookBacklog {
            pending: row.get(0),
            oldest_seconds: row.get(1),
        })
    }
}

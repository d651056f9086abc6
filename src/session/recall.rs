//! Message recall, asked over a session (`recall`) or over HTTP: the store makes the message
//! a tombstone and logs `message_recalled` in the group's event log, and the change is
//! published like any other group change — to the group's sessions on every node, in
//! version order, and for sync.

use super::SessionContext;
use crate::error::ApiError;
use crate::registry::Publish;

/// Recalls message `msgid` of group `gid` for member `by` (`None`: the admin API). Returns
/// once the groups have queued the event, so the caller's reply comes after it. A message
/// that was a tombstone already answers the same, with nothing told.
pub async fn recall(
    ctx: &SessionContext,
    gid: u64,
    msgid: u64,
    by: Option<u64>,
) -> Result<(), ApiError> {
    let window_ms = u64::try_from(ctx.limits.recall_window.as_millis()).unwrap_or(u64::MAX);
    let effects = ctx.store.recall_message(gid, msgid, by, window_ms).await?;
    let recalled_now = !effects.is_empty();
    if recalled_now {
        ctx.publisher.send(Publish(effects)).await?;
    }
    tracing::info!(
        gid,
        msgid,
        by,
        admin_api = by.is_none(),
        recalled_now,
        "message recalled"
    );
    Ok(())
}

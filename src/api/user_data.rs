//! A user's data (admin API, issue 14): the export of everything stored about them, and its
//! erasure.

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use utoipa::ToSchema;

use super::{publish, Admin, AppState};
use crate::error::ApiError;
use crate::model::valid_id;
use crate::store::{ErasureCounts, MessageKey, Store, StoreError, UserRecord};

/// Messages read from storage, and written out, per chunk of an export.
const EXPORT_BATCH: u32 = 1000;
/// Messages tombstoned per transaction of an erasure.
const ERASE_BATCH: u32 = 1000;

/// An export as its JSON reads (`messages` is streamed after the rest, batch by batch).
#[derive(Serialize, ToSchema)]
struct UserExport {
    #[serde(flatten)]
    record: UserRecord,
    /// Every message the user sent, in (gid, msgid) order: bodies exactly as stored, and
    /// tombstones (no body) for those recalled or erased.
    messages: Vec<crate::model::MessageView>,
}

/// `GET /v1/admin/users/{uid}/export`: everything stored about a user, as one JSON object
/// streamed in bounded batches; 404 for a user never created.
#[utoipa::path(
    get,
    path = "/v1/admin/users/{uid}/export",
    tag = "admin",
    security(("admin_key" = [])),
    params(("uid" = u64, Path, description = "The user")),
    responses(
        (status = 200, description = "Everything stored about the user. Streamed: a failure half way cuts the JSON short", body = UserExport),
        (status = 404, description = "not_found: the user was never created", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn export_route(
    _: Admin,
    uid: web::Path<u64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let uid = valid_id(*uid)?;
    let record = state.store.user_record(uid).await?;
    let mut head = serde_json::to_vec(&record).expect("a user's record always serialises");
    // The record is an object: its closing brace comes after the messages.
    head.pop();
    head.extend_from_slice(br#","messages":["#);
    let messages = stream::try_unfold(
        ExportCursor::Next {
            store: state.store.clone(),
            uid,
            after: (0, 0),
            sent: 0,
        },
        ExportCursor::next_chunk,
    );
    let body = stream::once(async { Ok(Bytes::from(head)) }).chain(messages);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body))
}

/// Where an export's stream of messages is.
enum ExportCursor {
    Next {
        store: Store,
        uid: u64,
        /// The (gid, msgid) of the last message written.
        after: MessageKey,
        /// Messages written so far.
        sent: u64,
    },
    Done,
}

impl ExportCursor {
    /// The next batch of messages as JSON text, the export's end after the last.
    async fn next_chunk(self) -> Result<Option<(Bytes, ExportCursor)>, StoreError> {
        let ExportCursor::Next {
            store,
            uid,
            after,
            sent,
        } = self
        else {
            return Ok(None);
        };
        let batch = store
            .messages_of_sender(uid, after, EXPORT_BATCH)
            .await
            .inspect_err(|error| tracing::error!(uid, sent, %error, "user export cut short"))?;
        let mut chunk = Vec::new();
        for (at, message) in batch.iter().enumerate() {
            if sent > 0 || at > 0 {
                chunk.push(b',');
            }
            serde_json::to_writer(&mut chunk, message).expect("messages always serialise");
        }
        let sent = sent + batch.len() as u64;
        let next = match batch.last() {
            Some(last) if batch.len() == EXPORT_BATCH as usize => ExportCursor::Next {
                store,
                uid,
                after: (last.gid, last.msgid),
                sent,
            },
            _ => {
                chunk.extend_from_slice(b"]}");
                tracing::info!(uid, messages = sent, "user data exported");
                ExportCursor::Done
            }
        };
        Ok(Some((Bytes::from(chunk), next)))
    }
}

/// What an erasure did.
#[derive(Serialize, ToSchema)]
struct ErasureSummary {
    uid: u64,
    #[serde(flatten)]
    counts: ErasureCounts,
}

/// `POST /v1/admin/users/{uid}/erase`: erases a user's data. They are deactivated (every
/// group left and told, ownership passed on, sessions closed with 4003), their messages
/// become `erased` tombstones in bounded batches, their friend rows, requests and
/// conversations are deleted and their profile blanked. Idempotent: a rerun (after a cut
/// request or a crash too) finishes it and counts only what it did.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{uid}/erase",
    tag = "admin",
    security(("admin_key" = [])),
    params(("uid" = u64, Path, description = "The user")),
    responses(
        (status = 200, description = "The user's data is erased; what this call did", body = ErasureSummary),
        (status = 404, description = "not_found: the user was never created", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn erase_route(
    _: Admin,
    uid: web::Path<u64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let uid = valid_id(*uid)?;
    let (mut counts, effects) = state.store.erase_begin(uid).await?;
    publish(&state, effects).await?;
    counts.messages_erased = state.store.erase_messages(uid, ERASE_BATCH).await?;
    let (conversations, effects) = state.store.erase_finish(uid).await?;
    counts.conversations_removed = conversations;
    publish(&state, effects).await?;
    tracing::info!(
        uid,
        groups_left = counts.groups_left,
        messages_erased = counts.messages_erased,
        friends_removed = counts.friends_removed,
        requests_removed = counts.requests_removed,
        conversations_removed = counts.conversations_removed,
        "user data erased"
    );
    Ok(HttpResponse::Ok().json(ErasureSummary { uid, counts }))
}

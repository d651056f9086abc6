//! Server-side publish (admin API): the app's backend posts a message into one group or
//! many — a system message, a bot's, an order update — as a given member or as the system.
//! Each group takes it through the same group commit, order and fan-out as a client's send
//! (and across nodes), and the caller's `id` makes a retried request store nothing twice,
//! exactly as a client's `cmid` does.

use std::collections::HashSet;

use actix_web::{web, HttpResponse};
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error_response::HttpErrorDetail;
use super::{Admin, AppState};
use crate::error::ApiError;
use crate::messages::{Author, Submit};
use crate::metrics;
use crate::model::valid_id;
use crate::protocol::{valid_body, valid_cmid};
use crate::registry::directory::ask_group;
use crate::store::Appended;

/// Groups asked at once while a publish to many is under way: enough to keep every group
/// commit busy, few enough not to flood the directory's mailbox.
const GROUPS_AT_ONCE: usize = 64;

#[derive(Deserialize, ToSchema)]
pub struct PublishRequest {
    /// The groups to post into, each named once.
    gids: Vec<u64>,
    /// The member the message is from; absent for a system message (`from` 0).
    from: Option<u64>,
    /// The caller's id of the message, idempotent per sender and group like `cmid`.
    #[schema(min_length = 1, max_length = 64)]
    id: String,
    /// Any JSON, up to HERALD_MAX_BODY_BYTES.
    #[schema(value_type = serde_json::Value)]
    body: Box<RawValue>,
}

/// One group's outcome, in the order of the request's `gids`.
#[derive(Serialize, ToSchema)]
struct Posted<'a> {
    gid: u64,
    #[serde(flatten)]
    outcome: Outcome<'a>,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum Outcome<'a> {
    Sent { msgid: u64, ts: i64, dup: bool },
    Failed { error: HttpErrorDetail<'a> },
}

/// The outcome of a publish, group by group.
#[derive(Serialize, ToSchema)]
struct PublishResults<'a> {
    results: Vec<Posted<'a>>,
}

/// `POST /v1/admin/messages`: posts the message into every group of `gids`. Answers 200 with
/// one result per group — its msgid, or why that group refused (not found, not a member,
/// busy, storage unavailable); a retry posts only where the message is not stored yet.
#[utoipa::path(
    post,
    path = "/v1/admin/messages",
    tag = "admin",
    security(("admin_key" = [])),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "One result per group, in the order of gids", body = PublishResults),
    ),
)]
pub async fn publish_route(
    _: Admin,
    body: web::Json<PublishRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let PublishRequest {
        gids,
        from,
        id,
        body,
    } = body.into_inner();
    valid_gids(&gids, state.publish_max_groups)?;
    valid_cmid("id", &id)?;
    valid_body(&body, state.sessions.limits.max_body_bytes)?;
    let author = match from {
        Some(uid) => Author::Member(valid_id(uid)?),
        None => Author::System,
    };
    let directory = &state.directory;
    let outcomes: Vec<Result<Appended, ApiError>> = stream::iter(&gids)
        .map(|&gid| {
            let submit = Submit {
                author,
                cmid: id.clone(),
                body: body.clone(),
            };
            async move {
                ask_group(directory, gid, submit)
                    .await
                    .and_then(|sent| sent)
            }
        })
        .buffered(GROUPS_AT_ONCE)
        .collect()
        .await;
    let posted: Vec<Posted> = gids
        .iter()
        .zip(&outcomes)
        .map(|(&gid, outcome)| Posted {
            gid,
            outcome: match outcome {
                Ok(sent) => Outcome::Sent {
                    msgid: sent.msgid,
                    ts: sent.ts,
                    dup: sent.dup,
                },
                Err(error) => Outcome::Failed {
                    error: error.into(),
                },
            },
        })
        .collect();
    let stored = outcomes
        .iter()
        .filter(|outcome| outcome.as_ref().is_ok_and(|sent| !sent.dup))
        .count();
    metrics::global().published.inc_by(stored as u64);
    Ok(HttpResponse::Ok().json(PublishResults { results: posted }))
}

/// One to `max` distinct, valid gids.
fn valid_gids(gids: &[u64], max: usize) -> Result<(), ApiError> {
    if gids.is_empty() || gids.len() > max {
        return Err(ApiError::bad_request(format!(
            "gids must name 1..={max} groups"
        )));
    }
    let mut seen = HashSet::with_capacity(gids.len());
    for &gid in gids {
        valid_id(gid)?;
        if !seen.insert(gid) {
            return Err(ApiError::bad_request(format!("gid {gid} is named twice")));
        }
    }
    Ok(())
}

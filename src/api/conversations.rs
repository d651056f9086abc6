//! Conversations (seed 001): the chats in a user's list, created idempotently.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::user::live_cursors;
use super::{AppState, User};
use crate::error::ApiError;
use crate::model::check_length;
use crate::model::refusal::Refusal;
use crate::model::{now_ms, valid_id};
use crate::store::{Conversation, Membership};

/// The channel type of a group; its channel id is `g<gid>`.
pub const GROUP_CHANNEL: u8 = 2;
pub const MAX_CHANNEL_ID_CHARS: usize = 128;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenConversation {
    /// `g<gid>` for a group channel (type 2).
    #[schema(min_length = 1, max_length = 128)]
    channel_id: String,
    #[schema(minimum = 1, maximum = 255)]
    channel_type: u8,
}

#[derive(Serialize, ToSchema)]
struct ConversationView<'a> {
    id: u64,
    channel_id: &'a str,
    channel_type: u8,
    created_at: i64,
    /// Group channels only: messages above the member's watermark.
    #[serde(skip_serializing_if = "Option::is_none")]
    unread: Option<u64>,
}

/// Unread counts of the user's groups (newest msgid − read position), with read positions
/// not yet written counted.
async fn unread_by_group(state: &AppState, uid: u64) -> Result<HashMap<u64, u64>, ApiError> {
    Ok(live_cursors(state, uid)
        .await?
        .into_iter()
        .map(|c| (c.gid, c.latest.saturating_sub(c.last_read)))
        .collect())
}

fn view<'a>(conversation: &'a Conversation, unread: &HashMap<u64, u64>) -> ConversationView<'a> {
    ConversationView {
        id: conversation.id,
        channel_id: &conversation.channel_id,
        channel_type: conversation.channel_type,
        created_at: conversation.created_at,
        // A group the user has left has nothing unread for them.
        unread: conversation
            .gid
            .map(|gid| unread.get(&gid).copied().unwrap_or(0)),
    }
}

/// The group of a group channel's id, `g<gid>`.
fn channel_group(channel_id: &str) -> Result<u64, ApiError> {
    channel_id
        .strip_prefix('g')
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| ApiError::bad_request("a group channel's id is g<gid>, as in g7"))
        .and_then(valid_id)
}

/// `POST /v1/conversations`: the user's conversation on a channel: 201 when created, 200
/// when it existed.
#[utoipa::path(
    post,
    path = "/v1/conversations",
    tag = "conversations",
    security(("user_token" = [])),
    request_body = OpenConversation,
    responses(
        (status = 200, description = "The conversation existed", body = ConversationView),
        (status = 201, description = "The conversation was created", body = ConversationView),
        (status = 404, description = "not_found: no such group (a non-member is refused with 403)", body = super::error_response::HttpErrorBody),
    ),
)]
pub async fn open_route(
    user: User,
    body: web::Json<OpenConversation>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let OpenConversation {
        channel_id,
        channel_type,
    } = body.into_inner();
    if channel_id.is_empty() {
        return Err(ApiError::bad_request("channel_id is empty"));
    }
    check_length("channel_id", Some(&channel_id), MAX_CHANNEL_ID_CHARS)?;
    if channel_type == 0 {
        return Err(ApiError::bad_request("channel_type is 1..255"));
    }
    let gid = if channel_type == GROUP_CHANNEL {
        let gid = channel_group(&channel_id)?;
        match state.store.membership(gid, user.uid).await? {
            Membership::Member => Some(gid),
            Membership::NotMember => return Err(Refusal::NotMember { gid }.into()),
            Membership::NoSuchGroup => return Err(Refusal::GroupMissing { gid }.into()),
        }
    } else {
        None
    };
    let (conversation, created) = state
        .store
        .open_conversation(user.uid, &channel_id, channel_type, gid, now_ms())
        .await?;
    let unread = unread_by_group(&state, user.uid).await?;
    let body = view(&conversation, &unread);
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

#[derive(Serialize, ToSchema)]
struct ConversationList<'a> {
    conversations: Vec<ConversationView<'a>>,
}

/// `GET /v1/conversations`: the user's conversations, oldest first, with unread counts for
/// group channels.
#[utoipa::path(
    get,
    operation_id = "list_conversations",
    path = "/v1/conversations",
    tag = "conversations",
    security(("user_token" = [])),
    responses(
        (status = 200, description = "The user's conversations", body = ConversationList),
    ),
)]
pub async fn list_route(user: User, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (conversations, unread) = futures_util::try_join!(
        async { Ok::<_, ApiError>(state.store.conversations(user.uid).await?) },
        unread_by_group(&state, user.uid)
    )?;
    Ok(HttpResponse::Ok().json(ConversationList {
        conversations: conversations.iter().map(|c| view(c, &unread)).collect(),
    }))
}

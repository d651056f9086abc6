//! The WebSocket wire protocol: the frames a client sends, the frames the server sends,
//! and the decoding rules for both (`docs/protocol.md`).
//!
//! Client frames are decoded through one flat envelope rather than a `#[serde(tag)]` enum:
//! serde buffers internally tagged content, which would lose the message body's exact
//! text (`RawValue`), and a flat envelope still yields the request `id` when the rest of the
//! frame is wrong, so the error can echo it.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ApiError, ErrorCode};
use crate::model::event::LoggedEvent;
use crate::model::sync::{
    FriendVersions, GroupListVersions, GroupVersions, ProfileVersion, SyncNotice, SyncReply,
    SyncRequest,
};
use crate::model::{no_nul, valid_id, GroupCursor, MessageView, ReadPosition};

/// `cmid` length bounds, in characters.
pub const CMID_MAX_CHARS: usize = 64;
/// Checks a sender's id of a message (`field`: its name in the request), which makes its
/// resends idempotent: 1..=64 characters, no NUL.
pub fn valid_cmid(field: &str, cmid: &str) -> Result<(), ApiError> {
    let chars = cmid.chars().count();
    if chars == 0 || chars > CMID_MAX_CHARS {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1..{CMID_MAX_CHARS} characters"
        )));
    }
    no_nul(field, cmid)
}

/// Checks a message body's size, in bytes of JSON.
pub fn valid_body(body: &RawValue, max_body: usize) -> Result<(), ApiError> {
    let size = body.get().len();
    if size > max_body {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("body is {size} bytes, the limit is {max_body}"),
        ));
    }
    Ok(())
}

/// Default and largest page of a `pull`.
pub const PULL_DEFAULT_LIMIT: u32 = 100;
pub const PULL_MAX_LIMIT: u32 = 1000;

/// A request id, echoed in the reply: a string, or a number echoed as the very text the
/// client sent (a number read as a double could come back as a different number).
#[derive(Debug, Clone)]
pub enum RequestId {
    Number(Box<RawValue>),
    Text(String),
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RequestId::Number(a), RequestId::Number(b)) => a.get() == b.get(),
            (RequestId::Text(a), RequestId::Text(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestId::Number(text) => text.serialize(serializer),
            RequestId::Text(text) => text.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(value: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = Box::<RawValue>::deserialize(value)?;
        match raw.get().as_bytes().first() {
            Some(b'"') => serde_json::from_str(raw.get())
                .map(RequestId::Text)
                .map_err(D::Error::custom),
            Some(b'-' | b'0'..=b'9') => Ok(RequestId::Number(raw)),
            _ => Err(D::Error::custom("`id` must be a string or a number")),
        }
    }
}

/// A decoded client request.
#[derive(Debug)]
pub enum ClientRequest {
    Send {
        gid: u64,
        cmid: String,
        body: Box<RawValue>,
    },
    Ack {
        gid: u64,
        msgid: u64,
    },
    /// The member has read everything up to `msgid` (cumulative).
    Read {
        gid: u64,
        msgid: u64,
    },
    Pull {
        gid: u64,
        after: u64,
        limit: u32,
    },
    Ping,
    Sync(SyncRequest),
    /// Who of the group is online now.
    Online {
        gid: u64,
    },
    /// An ephemeral signal (typing) for the group's online members.
    Signal {
        gid: u64,
        kind: SignalKind,
    },
    /// Recalls a message of the group: its body goes, a tombstone stays.
    Recall {
        gid: u64,
        msgid: u64,
    },
}

/// The kind of a signal: what clients agree on (`typing`, `stopped_typing`, …), which Herald
/// relays without reading; 1..32 lowercase letters, digits or `_`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalKind(String);

/// Longest signal kind, in bytes.
pub const SIGNAL_KIND_MAX: usize = 32;

impl SignalKind {
    pub fn parse(kind: String) -> Result<SignalKind, ApiError> {
        let fits = (1..=SIGNAL_KIND_MAX).contains(&kind.len())
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !fits {
            return Err(ApiError::bad_request(format!(
                "a signal's kind is 1..{SIGNAL_KIND_MAX} lowercase letters, digits or `_`"
            )));
        }
        Ok(SignalKind(kind))
    }
}

/// A client frame that could not be decoded, with the `id` it carried if any.
#[derive(Debug)]
pub struct FrameError {
    pub id: Option<RequestId>,
    pub error: ApiError,
}

/// Every field any client frame may carry; which are required depends on `type`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<RequestId>,
    gid: Option<u64>,
    cmid: Option<String>,
    /// A present `null` is a body; only an absent field is `None`.
    #[serde(default, borrow, deserialize_with = "present")]
    body: Option<&'a RawValue>,
    msgid: Option<u64>,
    after: Option<u64>,
    limit: Option<u32>,
    /// A signal's kind.
    #[serde(rename = "kind")]
    signal: Option<String>,
    me: Option<ProfileVersion>,
    group_list: Option<GroupListVersions>,
    groups: Option<Vec<GroupVersions>>,
    friends: Option<FriendVersions>,
}

fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(value).map(Some)
}

/// Only the `id`, for an error reply to a frame whose other fields are wrong.
#[derive(Deserialize)]
struct IdOnly {
    id: Option<RequestId>,
}

/// Decodes one text frame. `max_body` bounds the `body` of a send, in bytes of JSON.
pub fn decode(
    text: &str,
    max_body: usize,
) -> Result<(Option<RequestId>, ClientRequest), FrameError> {
    // serde would also read a struct from a JSON array, field by field.
    if !text.trim_start().starts_with('{') {
        return Err(FrameError {
            id: None,
            error: ApiError::bad_request("a frame is one JSON object"),
        });
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| FrameError {
        id: serde_json::from_str::<IdOnly>(text).ok().and_then(|f| f.id),
        error: ApiError::bad_request(format!("malformed frame: {e}")),
    })?;
    let id = envelope.id.clone();
    match request(envelope, max_body) {
        Ok(request) => Ok((id, request)),
        Err(error) => Err(FrameError { id, error }),
    }
}

fn request(envelope: Envelope, max_body: usize) -> Result<ClientRequest, ApiError> {
    let kind = envelope
        .kind
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("missing field `type`"))?;
    let gid = || {
        envelope
            .gid
            .ok_or_else(|| missing(kind, "gid"))
            .and_then(valid_id)
    };
    match kind {
        "send" => {
            let gid = gid()?;
            let cmid = envelope.cmid.ok_or_else(|| missing(kind, "cmid"))?;
            valid_cmid("cmid", &cmid)?;
            let body = envelope.body.ok_or_else(|| missing(kind, "body"))?;
            valid_body(body, max_body)?;
            Ok(ClientRequest::Send {
                gid,
                cmid,
                body: body.to_owned(),
            })
        }
        "ack" => Ok(ClientRequest::Ack {
            gid: gid()?,
            msgid: envelope.msgid.ok_or_else(|| missing(kind, "msgid"))?,
        }),
        "pull" => Ok(ClientRequest::Pull {
            gid: gid()?,
            after: envelope.after.unwrap_or(0),
            limit: pull_limit(envelope.limit)?,
        }),
        "ping" => Ok(ClientRequest::Ping),
        "read" => Ok(ClientRequest::Read {
            gid: gid()?,
            msgid: envelope.msgid.ok_or_else(|| missing(kind, "msgid"))?,
        }),
        "online" => Ok(ClientRequest::Online { gid: gid()? }),
        "recall" => Ok(ClientRequest::Recall {
            gid: gid()?,
            msgid: envelope
                .msgid
                .ok_or_else(|| missing(kind, "msgid"))
                .and_then(valid_id)?,
        }),
        "signal" => Ok(ClientRequest::Signal {
            gid: gid()?,
            kind: SignalKind::parse(envelope.signal.ok_or_else(|| missing(kind, "kind"))?)?,
        }),
        "sync" => SyncRequest {
            me: envelope.me.unwrap_or_default(),
            group_list: envelope.group_list.unwrap_or_default(),
            groups: envelope.groups.unwrap_or_default(),
            friends: envelope.friends.unwrap_or_default(),
        }
        .validate()
        .map(ClientRequest::Sync),
        other => Err(ApiError::bad_request(format!(
            "unknown frame type `{other}`"
        ))),
    }
}

fn missing(kind: &str, field: &str) -> ApiError {
    ApiError::bad_request(format!("`{kind}` needs the field `{field}`"))
}

/// Refuses a frame whose arrays and objects nest deeper than `max_depth`, before it is
/// decoded: one pass over the bytes, strings skipped. The refusal echoes the frame's `id`
/// (serde_json's own recursion limit keeps reading it safe).
pub fn check_depth(text: &str, max_depth: usize) -> Result<(), FrameError> {
    nesting_within(text, max_depth).map_err(|error| FrameError {
        id: serde_json::from_str::<IdOnly>(text).ok().and_then(|f| f.id),
        error,
    })
}

fn nesting_within(text: &str, max_depth: usize) -> Result<(), ApiError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ApiError::bad_request(format!(
                        "JSON nested deeper than {max_depth} levels"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The page size of a pull: the default when absent, refused outside 1..=1000.
pub fn pull_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(PULL_DEFAULT_LIMIT),
        Some(n) if (1..=PULL_MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit {n} is out of range 1..={PULL_MAX_LIMIT}"
        ))),
    }
}

/// Every frame the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Hello {
        uid: u64,
        session: &'a str,
        heartbeat_s: u64,
        groups: &'a [GroupCursor],
    },
    Sent {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        gid: u64,
        msgid: u64,
        ts: i64,
        dup: bool,
    },
    Msgs {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        gid: u64,
        msgs: &'a [MessageView],
        more: bool,
        /// The first retained msgid, when retention pruned messages above `after`.
        #[serde(skip_serializing_if = "Option::is_none")]
        first: Option<u64>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        code: ErrorCode,
        message: &'a str,
    },
    Msg(&'a MessageView),
    Synced {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(flatten)]
        reply: &'a SyncReply,
    },
    SyncNotify(&'a SyncNotice),
    /// A group event, pushed to the group's online members.
    Event(&'a LoggedEvent),
    /// Another user (`from`) asks this one to be friends.
    FriendRequest {
        from: u64,
        ts: i64,
    },
    /// The members of a group online now, anywhere in the cluster.
    Online {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        gid: u64,
        uids: &'a [u64],
    },
    /// A member's first session came online, or their last went (after the debounce).
    Presence {
        gid: u64,
        uid: u64,
        online: bool,
    },
    /// How far members have read, as it moved (coalesced over the ack flush interval).
    Reads {
        gid: u64,
        reads: &'a [ReadPosition],
    },
    /// A recall is done: the message is a tombstone (now, or already before).
    Recalled {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        gid: u64,
        msgid: u64,
    },
    /// A member's signal (typing), relayed as it came.
    Signal {
        gid: u64,
        from: u64,
        kind: &'a SignalKind,
    },
}

impl ServerFrame<'_> {
    /// The frame as JSON text. Serialising these types cannot fail: no maps with non-string
    /// keys, and raw bodies were valid JSON when they were accepted.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_keeps_its_body_byte_for_byte() {
        let text =
            r#"{"type":"send","id":"r1","gid":7,"cmid":"c-1","body":{"b":1e400,"a":[1, 2]}}"#;
        let (id, request) = decode(text, 1024).expect("valid send");
        assert_eq!(id, Some(RequestId::Text("r1".into())));
        match request {
            ClientRequest::Send { gid, cmid, body } => {
                assert_eq!((gid, cmid.as_str()), (7, "c-1"));
                assert_eq!(body.get(), r#"{"b":1e400,"a":[1, 2]}"#);
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn an_ill_typed_field_still_echoes_the_id() {
        let err = decode(r#"{"type":"send","id":9,"gid":"seven"}"#, 1024).unwrap_err();
        assert_eq!(
            err.id,
            Some(RequestId::Number(
                RawValue::from_string("9".into()).unwrap()
            ))
        );
        assert_eq!(err.error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn bodies_over_the_limit_are_too_large() {
        let err = decode(
            r#"{"type":"send","gid":1,"cmid":"c","body":"0123456789"}"#,
            8,
        )
        .unwrap_err();
        assert_eq!(err.error.code, ErrorCode::TooLarge);
    }

    #[test]
    fn cmid_length_is_counted_in_characters() {
        let ok = format!(
            r#"{{"type":"send","gid":1,"cmid":"{}","body":1}}"#,
            "é".repeat(64)
        );
        assert!(decode(&ok, 1024).is_ok());
        let long = format!(
            r#"{{"type":"send","gid":1,"cmid":"{}","body":1}}"#,
            "é".repeat(65)
        );
        assert!(decode(&long, 1024).is_err());
        assert!(decode(r#"{"type":"send","gid":1,"cmid":"","body":1}"#, 1024).is_err());
    }

    #[test]
    fn a_null_body_is_a_body() {
        match decode(r#"{"type":"send","gid":1,"cmid":"c","body":null}"#, 8) {
            Ok((_, ClientRequest::Send { body, .. })) => assert_eq!(body.get(), "null"),
            other => panic!("decoded as {other:?}"),
        }
        assert!(decode(r#"{"type":"send","gid":1,"cmid":"c"}"#, 8).is_err());
    }

    #[test]
    fn unknown_types_and_non_objects_are_bad_requests() {
        let array = r#"["send","a1",1,"c-1",{"text":"hi"},null,null,null]"#;
        for text in [
            r#"{"type":"dance"}"#,
            "[1,2]",
            array,
            "\"send\"",
            "not json",
            "{}",
        ] {
            assert_eq!(
                decode(text, 1024).unwrap_err().error.code,
                ErrorCode::BadRequest,
                "{text}"
            );
        }
    }

    #[test]
    fn a_sync_frame_carries_the_versions_held() {
        let text = r#"{"type":"sync","id":"s1","groups":[{"gid":7,"user_list_version":5}],
                       "friends":{"user_list_version":2}}"#;
        match decode(text, 1024) {
            Ok((_, ClientRequest::Sync(request))) => {
                assert_eq!(request.groups.len(), 1);
                assert_eq!(request.groups[0].user_list_version, 5);
                assert_eq!(request.groups[0].user_info_version, 0);
                assert_eq!(request.friends.user_list_version, 2);
                assert_eq!(request.group_list.group_list_version, 0);
            }
            other => panic!("decoded as {other:?}"),
        }
        let bad = r#"{"type":"sync","friends":{"user_list_versio":2}}"#;
        assert_eq!(
            decode(bad, 1024).unwrap_err().error.code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert!(check_depth(&deep, 32).is_err());
        let frame = format!(
            r#"{{"type":"send","gid":1,"cmid":"c","body":{}{}}}"#,
            "[".repeat(31),
            "]".repeat(31)
        );
        assert!(check_depth(&frame, 32).is_ok());
        let brackets_in_text = r#"{"body":"[[[[[[\"{{{{{{"}"#;
        assert!(check_depth(brackets_in_text, 2).is_ok());
    }

    #[test]
    fn a_recall_names_its_message_and_is_answered_recalled() {
        match decode(r#"{"type":"recall","id":"r1","gid":7,"msgid":12}"#, 8) {
            Ok((_, ClientRequest::Recall { gid, msgid })) => assert_eq!((gid, msgid), (7, 12)),
            other => panic!("decoded as {other:?}"),
        }
        for bad in [
            r#"{"type":"recall","gid":7}"#,
            r#"{"type":"recall","gid":7,"msgid":0}"#,
        ] {
            assert_eq!(
                decode(bad, 8).unwrap_err().error.code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        assert_frame(
            ServerFrame::Recalled {
                id: Some(RequestId::Text("r1".into())),
                gid: 7,
                msgid: 12,
            },
            r#"{"type":"recalled","id":"r1","gid":7,"msgid":12}"#,
        );
    }

    #[test]
    fn pull_limits_default_and_cap() {
        assert_eq!(pull_limit(None).unwrap(), 100);
        assert_eq!(pull_limit(Some(1000)).unwrap(), 1000);
        assert!(pull_limit(Some(1001)).is_err());
        assert!(pull_limit(Some(0)).is_err());
    }

    #[test]
    fn pushed_messages_carry_their_type_and_raw_body() {
        let view = MessageView {
            gid: 7,
            msgid: 126,
            from: 42,
            ts: 1,
            cmid: "c-1".into(),
            body: Some(RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap()),
            tombstone: None,
        };
        assert_eq!(
            ServerFrame::Msg(&view).encode(),
            r#"{"type":"msg","gid":7,"msgid":126,"from":42,"ts":1,"cmid":"c-1","body":{"text":"hi"}}"#
        );
    }

    /// Compares a frame with the JSON clients are documented to get, key order aside.
    fn assert_frame(frame: ServerFrame, golden: &str) {
        let sent: serde_json::Value = serde_json::from_str(&frame.encode()).unwrap();
        let golden: serde_json::Value = serde_json::from_str(golden).unwrap();
        assert_eq!(sent, golden);
    }

    #[test]
    fn event_frames_are_the_logged_event_under_their_type() {
        use crate::model::event::{GroupEvent, Removal};
        use crate::model::Role;
        let logged = |version, event| LoggedEvent {
            gid: 7,
            version,
            ts: 1_732_000_000_000,
            event,
        };
        assert_frame(
            ServerFrame::Event(&logged(
                12,
                GroupEvent::MemberRemoved {
                    uid: 20,
                    by: None,
                    reason: Removal::Deactivated,
                },
            )),
            r#"{"type":"event","event":"member_removed","gid":7,"version":12,"uid":20,"reason":"deactivated","ts":1732000000000}"#,
        );
        assert_frame(
            ServerFrame::Event(&logged(
                13,
                GroupEvent::MemberAdded {
                    uid: 21,
                    role: Role::Member,
                    by: Some(1),
                },
            )),
            r#"{"type":"event","event":"member_added","gid":7,"version":13,"uid":21,"role":"member","by":1,"ts":1732000000000}"#,
        );
        assert_frame(
            ServerFrame::Event(&logged(
                1,
                GroupEvent::GroupCreated {
                    by: Some(42),
                    name: "g".into(),
                    description: String::new(),
                    owner: 42,
                    uids: vec![42, 43],
                },
            )),
            r#"{"type":"event","event":"group_created","gid":7,"version":1,"by":42,"name":"g","description":"","owner":42,"uids":[42,43],"ts":1732000000000}"#,
        );
        assert_frame(
            ServerFrame::Event(&logged(14, GroupEvent::GroupDisbanded { by: None })),
            r#"{"type":"event","event":"group_disbanded","gid":7,"version":14,"ts":1732000000000}"#,
        );
    }

    #[test]
    fn a_friend_request_names_who_asked_and_when() {
        assert_frame(
            ServerFrame::FriendRequest {
                from: 42,
                ts: 1_732_000_000_000,
            },
            r#"{"type":"friend_request","from":42,"ts":1732000000000}"#,
        );
    }

    #[test]
    fn a_sync_reply_is_flat_under_its_type_and_id() {
        use crate::model::sync::{FriendSync, GroupListSync, UserInfo};
        let me = UserInfo {
            uid: 42,
            nickname: "ann".into(),
            avatar: String::new(),
            signature: String::new(),
            active: true,
            user_info_version: 1,
            nickname_version: 1,
            avatar_version: 0,
            signature_version: 0,
        };
        let reply = SyncReply {
            me,
            group_list: GroupListSync {
                versions: GroupListVersions::default(),
                snapshot: true,
                groups: Vec::new(),
                left: Vec::new(),
            },
            groups: Vec::new(),
            friends: FriendSync {
                versions: FriendVersions::default(),
                snapshot: true,
                added: Vec::new(),
                removed: Vec::new(),
                users: Vec::new(),
            },
        };
        let frame: serde_json::Value = serde_json::from_str(
            &ServerFrame::Synced {
                id: Some(RequestId::Text("s1".into())),
                reply: &reply,
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(frame["type"], "synced");
        assert_eq!(frame["id"], "s1");
        assert_eq!(frame["me"]["nickname"], "ann");
        assert_eq!(frame["group_list"]["group_list_version"], 0);
        assert_eq!(frame["friends"]["snapshot"], true);
    }
}

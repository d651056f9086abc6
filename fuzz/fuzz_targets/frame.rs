//! Client frame decoding and the pure half of dispatch: arbitrary bytes go through
//! `protocol::check_depth` and `protocol::decode` as a session's `on_text` does, and
//! whatever the session would answer without storage (a `pong`, an `error`, the `sent`/`msg`
//! frames of an accepted send) is encoded and read back. `decode` is also checked on its
//! own, without the depth check in front of it.
//!
//! Besides "no panic", it checks the wire contract (`docs/protocol.md`):
//! - the request `id` is echoed: the one the frame carried, as the very text it carried (a
//!   number too: this target found `{"type":"ping","id":900771990946199094672}` answered
//!   with another number, when ids were read as doubles), also when the rest of the frame
//!   is wrong, and none when the frame carried none (or several, or a bad one);
//! - a send's `body` is kept byte for byte: it is the very text of the frame's `body`
//!   member, and comes back unchanged inside the `msg` frame;
//! - ids, `cmid` lengths and pull limits are within their documented bounds;
//! - a refusal is `bad_request` or `too_large` (only for a body over the limit), with a
//!   message, and its `error` frame is not much larger than the frame that caused it;
//! - a decoded `sync` serialises back to a frame that decodes to the same versions.
#![no_main]

use std::fmt;

use herald::error::ErrorCode;
use herald::protocol::{
    self, ClientRequest, MessageView, RequestId, ServerFrame, CMID_MAX_CHARS, MAX_ID,
    PULL_DEFAULT_LIMIT, PULL_MAX_LIMIT,
};
use herald::sync::{SyncRequest, MAX_SYNC_GROUPS};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// `HERALD_MAX_BODY_BYTES`' default, as the gateway runs.
const MAX_BODY: usize = 16 * 1024;
/// A limit that fuzzed bodies exceed easily.
const SMALL_BODY: usize = 16;
/// `HERALD_MAX_JSON_DEPTH`'s default.
const MAX_DEPTH: usize = 32;

fuzz_target!(|data: &[u8]| {
    // The gateway only decodes text frames; binary ones are refused before decoding.
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
});

fn check(text: &str) {
    // A small limit too, so that bodies over it (`too_large`) are fuzzed as well.
    decode(text, SMALL_BODY);
    let decoded = decode(text, MAX_BODY);
    // What a session does with a text frame: the depth first, then decoding.
    match protocol::check_depth(text, MAX_DEPTH) {
        Ok(()) => {
            if let Some(body) = decoded {
                // Within the depth limit, serde_json's own reader (nesting limit 128)
                // reads any body, except for what the JSON grammar allows but a double or
                // a Rust string cannot hold: numbers beyond f64 (`1e400`, kept byte for
                // byte by design) and UTF-16 surrogate escapes that do not pair up.
                if !has_surrogate_escape(&body) {
                    if let Err(e) = serde_json::from_str::<Value>(&body) {
                        let e = e.to_string();
                        assert!(e.contains("number out of range"), "{body} read as {e}");
                    }
                }
            }
        }
        Err(bad) => {
            assert_eq!(bad.error.code, ErrorCode::BadRequest);
            assert!(!bad.error.message.is_empty(), "an error without a message");
            // The refusal echoes the id as a refusal by `decode` would.
            if let Err(refused) = protocol::decode(text, MAX_BODY) {
                assert_eq!(bad.id, refused.id, "{text}");
            }
        }
    }
}

/// Decodes a frame and checks the outcome; returns an accepted send's body.
fn decode(text: &str, max_body: usize) -> Option<String> {
    let top = Members::read(text);
    match protocol::decode(text, max_body) {
        Ok((id, request)) => {
            let top = top.unwrap_or_else(|| panic!("accepted a frame that is no JSON object"));
            assert_eq!(id, top.expected_id(), "the id echoed");
            accepted(text, &top, id, request, max_body)
        }
        Err(refused) => {
            let error = &refused.error;
            assert!(!error.message.is_empty(), "an error without a message");
            match error.code {
                ErrorCode::BadRequest => {}
                ErrorCode::TooLarge => {
                    let top = top.as_ref().expect("too_large for no JSON object");
                    assert_eq!(
                        top.string("type").as_deref(),
                        Some("send"),
                        "too_large for no send"
                    );
                    let body = top.one("body").expect("too_large without one body");
                    assert!(body.len() > max_body, "too_large for {} bytes", body.len());
                }
                other => panic!("a frame refused as {other:?}"),
            }
            let expected = top.as_ref().and_then(Members::expected_id);
            assert_eq!(refused.id, expected, "the id echoed in an error");
            let frame = ServerFrame::Error {
                id: refused.id.clone(),
                code: error.code,
                message: &error.message,
            }
            .encode();
            assert!(
                frame.len() <= 8 * text.len() + 512,
                "a {}-byte frame answered by a {}-byte error",
                text.len(),
                frame.len()
            );
            let back = reread(&frame);
            assert_eq!(back.kind, "error");
            assert_eq!(back.code.as_deref(), Some(error.code.as_str()));
            assert_eq!(back.message.as_deref(), Some(error.message.as_str()));
            assert_echoed(back.id, &refused.id);
            None
        }
    }
}

/// Checks an accepted request against the frame it came from, and what it would answer;
/// returns a send's body.
fn accepted(
    text: &str,
    top: &Members<'_>,
    id: Option<RequestId>,
    request: ClientRequest,
    max_body: usize,
) -> Option<String> {
    let kind = top.string("type").expect("accepted without one `type`");
    match request {
        ClientRequest::Ping => {
            assert_eq!(kind, "ping");
            let pong = ServerFrame::Pong { id: id.clone() }.encode();
            let back = reread(&pong);
            assert_eq!(back.kind, "pong");
            assert_echoed(back.id, &id);
            None
        }
        ClientRequest::Send { gid, cmid, body } => {
            assert_eq!(kind, "send");
            assert!((1..=MAX_ID).contains(&gid), "gid {gid}");
            assert_eq!(top.number("gid"), Some(gid));
            let chars = cmid.chars().count();
            assert!(
                (1..=CMID_MAX_CHARS).contains(&chars),
                "cmid of {chars} chars"
            );
            assert_eq!(Some(cmid.as_str()), top.string("cmid").as_deref());
            // Byte for byte: the very text of the frame's `body` member.
            let raw = body.get();
            assert_eq!(Some(raw), top.one("body"), "the body as sent");
            assert!(text.contains(raw));
            assert!(raw.len() <= max_body, "a {}-byte body accepted", raw.len());
            let again: &RawValue = serde_json::from_str(raw).expect("the body is JSON");
            assert_eq!(again.get(), raw);

            let sent = ServerFrame::Sent {
                id: id.clone(),
                gid,
                msgid: 1,
                ts: 0,
                dup: false,
            }
            .encode();
            let back = reread(&sent);
            assert_eq!(back.kind, "sent");
            assert_eq!(back.gid, Some(gid));
            assert_echoed(back.id, &id);

            let view = MessageView {
                gid,
                msgid: 1,
                from: 1,
                ts: 0,
                cmid,
                body: body.clone(),
            };
            let pushed = ServerFrame::Msg(&view).encode();
            let back: PushedMsg = serde_json::from_str(&pushed).expect("msg frames are JSON");
            assert_eq!(back.kind, "msg");
            assert_eq!(back.gid, gid);
            assert_eq!(back.cmid, view.cmid);
            assert_eq!(back.body.get(), raw, "the body as pushed");
            Some(view.body.get().to_owned())
        }
        ClientRequest::Ack { gid, msgid } => {
            assert_eq!(kind, "ack");
            assert!((1..=MAX_ID).contains(&gid), "gid {gid}");
            assert_eq!(top.number("gid"), Some(gid));
            assert_eq!(top.number("msgid"), Some(msgid));
            None
        }
        ClientRequest::Pull { gid, after, limit } => {
            assert_eq!(kind, "pull");
            assert!((1..=MAX_ID).contains(&gid), "gid {gid}");
            assert_eq!(top.number("gid"), Some(gid));
            assert!((1..=PULL_MAX_LIMIT).contains(&limit), "limit {limit}");
            let sent_limit = top.number("limit").unwrap_or(u64::from(PULL_DEFAULT_LIMIT));
            assert_eq!(u64::from(limit), sent_limit);
            assert_eq!(after, top.number("after").unwrap_or(0));
            None
        }
        ClientRequest::Sync(request) => {
            assert_eq!(kind, "sync");
            assert!(request.groups.len() <= MAX_SYNC_GROUPS);
            if let Some(groups) = top.one("groups").filter(|g| *g != "null") {
                let sent: Vec<&RawValue> = serde_json::from_str(groups).expect("an array");
                assert_eq!(sent.len(), request.groups.len());
            }
            resync(&id, &request);
            None
        }
    }
}

/// A decoded sync request serialises back to a frame that decodes to the same versions.
fn resync(id: &Option<RequestId>, request: &SyncRequest) {
    let frame = serde_json::json!({
        "type": "sync",
        "id": id,
        "me": request.me,
        "group_list": request.group_list,
        "groups": request.groups,
        "friends": request.friends,
    })
    .to_string();
    match protocol::decode(&frame, MAX_BODY) {
        Ok((again_id, ClientRequest::Sync(again))) => {
            assert_eq!(&again_id, id);
            assert_eq!(again.me, request.me);
            assert_eq!(again.group_list, request.group_list);
            assert_eq!(again.groups, request.groups);
            assert_eq!(again.friends, request.friends);
        }
        other => panic!("a re-encoded sync {frame} decoded as {other:?}"),
    }
}

/// Whether JSON text holds a `\uD800`..`\uDFFF` escape (or what looks like one).
fn has_surrogate_escape(text: &str) -> bool {
    text.as_bytes().windows(4).any(|w| {
        w[..2] == *b"\\u"
            && w[2].eq_ignore_ascii_case(&b'd')
            && matches!(w[3].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
    })
}

/// A reply read back; its `id` as raw text (a number need not fit a double).
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    gid: Option<u64>,
    code: Option<String>,
    message: Option<String>,
}

fn reread(frame: &str) -> Reply<'_> {
    serde_json::from_str(frame).unwrap_or_else(|e| panic!("{frame} is not JSON: {e}"))
}

/// Checks the id a reply carries: the very text of the id decoded.
fn assert_echoed(back: Option<&RawValue>, id: &Option<RequestId>) {
    let sent = id
        .as_ref()
        .map(|id| serde_json::to_string(id).expect("ids serialise"));
    assert_eq!(back.map(RawValue::get), sent.as_deref(), "the id echoed");
}

/// A `msg` frame read back, its body as raw text.
#[derive(Deserialize)]
struct PushedMsg<'a> {
    #[serde(rename = "type")]
    kind: String,
    gid: u64,
    cmid: String,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// The members of a frame that is one JSON object, in order, duplicates kept, each value as
/// the raw text the frame holds. Values are not parsed, so no nesting limit applies.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    fn read(text: &'a str) -> Option<Members<'a>> {
        let mut de = serde_json::Deserializer::from_str(text);
        let members = (&mut de).deserialize_map(MembersVisitor).ok()?;
        de.end().ok()?;
        Some(members)
    }

    /// The raw text of the member `key` when the frame has exactly one.
    fn one(&self, key: &str) -> Option<&'a str> {
        let mut found = self.0.iter().filter(|(k, _)| k == key);
        match (found.next(), found.next()) {
            (Some((_, value)), None) => Some(value.get()),
            _ => None,
        }
    }

    fn string(&self, key: &str) -> Option<String> {
        self.one(key).and_then(|raw| serde_json::from_str(raw).ok())
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.one(key).and_then(|raw| serde_json::from_str(raw).ok())
    }

    /// The id a reply must echo: the frame's one `id`, when it is a string or a number.
    fn expected_id(&self) -> Option<RequestId> {
        self.one("id")
            .and_then(|raw| serde_json::from_str(raw).ok())
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
            members.push(member);
        }
        Ok(Members(members))
    }
}

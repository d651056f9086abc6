//! Herald's frames as the kit's clients see them: one decoder for what the server writes,
//! and the request frames the clients write as text.
//!
//! A frame is decoded in one pass that borrows from its text and skips, unread, every field
//! no client looks at (bodies too, unless the reader names a type for them): the load-test
//! harness decodes a million frames a second with it.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The fields of a server frame that say what it is and what it answers. `B` is how the
/// body of a `msg` is read; by default it is skipped.
#[derive(Debug, Deserialize)]
pub struct Frame<'a, B = IgnoredAny> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The request id, as the very text the client sent (a number or a string).
    #[serde(borrow)]
    pub id: Option<&'a RawValue>,
    pub gid: Option<u64>,
    pub msgid: Option<u64>,
    /// `sent`: the message had been stored before (a resend).
    pub dup: Option<bool>,
    /// `msgs`: more messages follow this page.
    pub more: Option<bool>,
    /// `error`: what went wrong, as `unavailable` or `rate_limited`.
    pub code: Option<&'a str>,
    /// `msg`: the message's body.
    pub body: Option<B>,
    /// `msgs`: the page of messages.
    pub msgs: Option<Vec<Pulled>>,
}

impl<B> Frame<'_, B> {
    /// The request id when it is a whole number, as the harness numbers its requests.
    pub fn numeric_id(&self) -> Option<u64> {
        self.id?.get().parse().ok()
    }
}

/// A message of a `msgs` page, as far as its place in the group goes.
#[derive(Debug, Deserialize)]
pub struct Pulled {
    pub msgid: u64,
}

/// The first frame of a session.
#[derive(Debug, Deserialize)]
pub struct Hello {
    pub groups: Vec<Cursor>,
}

/// Where a session stands in one of its groups.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Cursor {
    pub gid: u64,
    pub last_ack: u64,
    pub latest: u64,
}

/// Messages a pull asks for at most.
pub const PULL_LIMIT: u64 = 1000;

/// A cumulative ack of `msgid` in `gid`.
pub fn ack(gid: u64, msgid: u64) -> String {
    format!(r#"{{"type":"ack","gid":{gid},"msgid":{msgid}}}"#)
}

/// Request `id`: a page of `gid` after `after`, `PULL_LIMIT` long.
pub fn pull(id: u64, gid: u64, after: u64) -> String {
    format!(r#"{{"type":"pull","id":{id},"gid":{gid},"after":{after},"limit":{PULL_LIMIT}}}"#)
}

/// Request `id`: a ping, answered by a pong.
pub fn ping(id: u64) -> String {
    format!(r#"{{"type":"ping","id":{id}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Stamp {
        t: u64,
    }

    #[test]
    fn a_msg_is_read_with_the_body_the_reader_names_and_without_it() {
        let text =
            r#"{"type":"msg","gid":7,"msgid":126,"from":1,"cmid":"c-1","body":{"t":5,"p":"xx"}}"#;
        let stamped: Frame<Stamp> = serde_json::from_str(text).unwrap();
        assert_eq!(
            (stamped.kind, stamped.gid, stamped.msgid, stamped.body),
            ("msg", Some(7), Some(126), Some(Stamp { t: 5 }))
        );
        let plain: Frame = serde_json::from_str(text).unwrap();
        assert_eq!((plain.kind, plain.id.is_none()), ("msg", true));
    }

    #[test]
    fn ids_are_kept_as_sent_and_read_as_numbers_when_they_are_whole_numbers() {
        let id = |text: &str| {
            let frame: Frame = serde_json::from_str(text).unwrap();
            (frame.id.map(|id| id.get().to_owned()), frame.numeric_id())
        };
        assert_eq!(
            id(r#"{"type":"pong","id":17}"#),
            (Some("17".into()), Some(17))
        );
        assert_eq!(
            id(r#"{"type":"pong","id":1E2}"#),
            (Some("1E2".into()), None)
        );
        assert_eq!(
            id(r#"{"type":"pong","id":"r1"}"#),
            (Some(r#""r1""#.into()), None)
        );
    }

    #[test]
    fn a_page_an_error_and_a_hello_are_read() {
        let page: Frame =
            serde_json::from_str(r#"{"type":"msgs","id":2,"gid":7,"msgs":[{"msgid":3,"body":1e400},{"msgid":4}],"more":true}"#)
                .unwrap();
        let msgids: Vec<u64> = page.msgs.unwrap().iter().map(|m| m.msgid).collect();
        assert_eq!((msgids, page.more), (vec![3, 4], Some(true)));
        let error: Frame = serde_json::from_str(
            r#"{"type":"error","id":9,"code":"unavailable","message":"later"}"#,
        )
        .unwrap();
        assert_eq!(error.code, Some("unavailable"));
        let hello: Hello = serde_json::from_str(
            r#"{"type":"hello","uid":1,"groups":[{"gid":7,"last_ack":2,"latest":5}]}"#,
        )
        .unwrap();
        let cursor = hello.groups[0];
        assert_eq!((cursor.gid, cursor.last_ack, cursor.latest), (7, 2, 5));
    }

    #[test]
    fn request_frames_are_json_of_the_protocol() {
        let parse = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap();
        assert_eq!(
            parse(ack(7, 3)),
            serde_json::json!({"type": "ack", "gid": 7, "msgid": 3})
        );
        assert_eq!(
            parse(pull(2, 7, 10)),
            serde_json::json!({"type": "pull", "id": 2, "gid": 7, "after": 10, "limit": 1000})
        );
        assert_eq!(parse(ping(4)), serde_json::json!({"type": "ping", "id": 4}));
    }
}

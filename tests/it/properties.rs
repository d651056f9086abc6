//! Properties of the pure parts of the wire protocol, over generated input: frame decoding
//! (`herald::protocol::decode`), pull limits and the merging of `sync_notify` notices. No
//! server and no database: these call the library directly.

use std::collections::BTreeMap;

use herald::error::ErrorCode;
use herald::model::sync::{
    FriendVersions, GroupListVersions, GroupVersions, ProfileVersion, SyncNotice,
};
use herald::model::{valid_id, MAX_ID};
use herald::protocol::{
    decode, pull_limit, ClientRequest, RequestId, ServerFrame, CMID_MAX_CHARS, PULL_DEFAULT_LIMIT,
    PULL_MAX_LIMIT,
};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The gateway's default `HERALD_MAX_BODY_BYTES`.
const MAX_BODY: usize = 16 * 1024;
const FRAME_TYPES: [&str; 5] = ["send", "ack", "pull", "ping", "sync"];

/// proptest's defaults (256 cases, or `PROPTEST_CASES`), without regression files: a failure
/// prints its shrunk input instead of writing it into the source tree.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- strategies ----

/// Characters a cmid or a string is likely to get wrong: quotes, backslashes, controls,
/// escapes' look-alikes, non-ASCII and astral characters, besides any character at all.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        1 => prop::sample::select(vec![
            '"', '\\', '/', '\u{0}', '\n', '\t', '\u{7f}', 'é', '\u{2028}', '\u{feff}', '😀', '𝄞',
            '{', '}', 'u',
        ]),
    ]
}

fn tricky_string(chars: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), chars).prop_map(String::from_iter)
}

/// Any JSON value, nested a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        tricky_string(0..=12).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((tricky_string(0..=6), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The text of a body as a client might write it: compact, pretty, or in forms a
/// re-serialisation would change (exponents, trailing zeros, spacing, key order, escapes).
fn body_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => json_value().prop_map(|v| v.to_string()),
        1 => json_value().prop_map(|v| serde_json::to_string_pretty(&v).unwrap()),
        1 => prop::sample::select(vec![
            "1e400",
            "-0",
            "1.50",
            "1E+2",
            "null",
            "[1 , 2,\n\t3 ]",
            r#"{"b":1,"a":2,"b":3}"#,
            r#""\u00e9\ud83d\ude00\/""#,
            r#"{ "text" : "hi" }"#,
            "123456789012345678901234567890",
        ])
        .prop_map(String::from),
    ]
}

/// A request id, as it is written in a frame: a string, or any JSON number (integers of
/// any size, fractions, exponents), which must come back as the same text.
fn request_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![
        tricky_string(0..=16).prop_map(RequestId::Text),
        any::<i64>().prop_map(|n| number_id(&n.to_string())),
        "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,12})?([eE][+-]?[0-9]{1,3})?"
            .prop_map(|text| number_id(&text)),
    ]
}

fn number_id(text: &str) -> RequestId {
    RequestId::Number(RawValue::from_string(text.to_owned()).expect("a JSON number"))
}

fn gid() -> impl Strategy<Value = u64> {
    prop_oneof![1..=MAX_ID, Just(1), Just(MAX_ID)]
}

/// A valid cmid: without U+0000, which is refused (PostgreSQL cannot store it in `text`).
fn cmid() -> impl Strategy<Value = String> {
    tricky_string(1..=CMID_MAX_CHARS).prop_map(|c| c.replace('\0', "~"))
}

/// Frame members, written in an arbitrary order with arbitrary white space around them.
fn object_text(members: Vec<(String, String)>) -> impl Strategy<Value = String> {
    let count = members.len();
    (
        Just(members).prop_shuffle(),
        prop::collection::vec(prop::sample::select(vec!["", " ", "\n", "\t  "]), count + 1),
    )
        .prop_map(|(members, spaces)| {
            let members: Vec<String> = members
                .iter()
                .zip(&spaces)
                .map(|((key, value), space)| format!("{space}{}:{space}{value}", json(key)))
                .collect();
            format!("{{{}{}}}", members.join(","), spaces[spaces.len() - 1])
        })
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn send_members(
    id: Option<&RequestId>,
    gid: &str,
    cmid: &str,
    body: &str,
) -> Vec<(String, String)> {
    let mut members = vec![
        ("type".to_owned(), json("send")),
        ("gid".to_owned(), gid.to_owned()),
        ("cmid".to_owned(), json(cmid)),
        ("body".to_owned(), body.to_owned()),
    ];
    if let Some(id) = id {
        members.push(("id".to_owned(), json(id)));
    }
    members
}

/// A frame that is well formed but for one field.
fn send_frame(
    id: Option<RequestId>,
    gid: &str,
    cmid: &str,
    body: &str,
) -> impl Strategy<Value = (Option<RequestId>, String)> {
    object_text(send_members(id.as_ref(), gid, cmid, body)).prop_map(move |text| (id.clone(), text))
}

fn sync_notice() -> impl Strategy<Value = SyncNotice> {
    // Few gids and small versions, so that notices name the same groups and versions tie.
    let version = prop_oneof![4 => 0..16u64, 1 => any::<u64>()];
    let group =
        (1..8u64, version.clone(), version.clone()).prop_map(|(gid, list, info)| GroupVersions {
            gid,
            user_list_version: list,
            user_info_version: info,
        });
    let pair = (version.clone(), version.clone());
    (
        prop::collection::vec(group, 0..5),
        prop::option::of(pair.clone()),
        prop::option::of(pair),
        prop::option::of(version),
    )
        .prop_map(|(groups, group_list, friends, me)| SyncNotice {
            groups,
            group_list: group_list.map(|(list, info)| GroupListVersions {
                group_list_version: list,
                group_info_version: info,
            }),
            friends: friends.map(|(list, info)| FriendVersions {
                user_list_version: list,
                user_info_version: info,
            }),
            me: me.map(|v| ProfileVersion {
                user_info_version: v,
            }),
        })
}

// ---- helpers ----

/// Decodes a frame that must be refused; returns the error's code, checking that it has a
/// message and that the id is echoed.
fn refused(text: &str, max_body: usize, id: Option<&RequestId>) -> ErrorCode {
    match decode(text, max_body) {
        Ok((_, request)) => panic!("accepted {text} as {request:?}"),
        Err(err) => {
            assert!(!err.error.message.is_empty(), "no message for {text}");
            assert_eq!(err.id.as_ref(), id, "id echoed for {text}");
            err.error.code
        }
    }
}

/// What a notice tells: per part, the newest version of each field.
#[derive(Debug, Default, PartialEq, Eq)]
struct Newest {
    groups: BTreeMap<u64, (u64, u64)>,
    group_list: Option<(u64, u64)>,
    friends: Option<(u64, u64)>,
    me: Option<u64>,
}

impl Newest {
    fn of<'a>(notices: impl IntoIterator<Item = &'a SyncNotice>) -> Newest {
        fn max2(held: Option<(u64, u64)>, new: (u64, u64)) -> (u64, u64) {
            held.map_or(new, |(a, b)| (a.max(new.0), b.max(new.1)))
        }
        let mut newest = Newest::default();
        for notice in notices {
            for g in &notice.groups {
                let held = newest.groups.get(&g.gid).copied();
                let versions = max2(held, (g.user_list_version, g.user_info_version));
                newest.groups.insert(g.gid, versions);
            }
            if let Some(l) = notice.group_list {
                let new = (l.group_list_version, l.group_info_version);
                newest.group_list = Some(max2(newest.group_list, new));
            }
            if let Some(f) = notice.friends {
                let new = (f.user_list_version, f.user_info_version);
                newest.friends = Some(max2(newest.friends, new));
            }
            if let Some(me) = notice.me {
                let v = me.user_info_version;
                newest.me = Some(newest.me.map_or(v, |held| held.max(v)));
            }
        }
        newest
    }
}

fn merged<'a>(notices: impl IntoIterator<Item = &'a SyncNotice>) -> SyncNotice {
    let mut merged = SyncNotice::default();
    for notice in notices {
        merged.merge(notice);
    }
    merged
}

// ---- properties ----

/// Numeric ids come back as the very text sent, even where a double would round
/// (found by `fuzz/`: `{"id":900771990946199094672}` once came back as another number).
#[test]
fn numeric_ids_are_echoed_as_the_text_sent() {
    for sent in [
        "900771990946199094672",
        "2.5352342687421664e+215",
        "3.6717257103375746e-274",
        "1E2",
        "-0",
    ] {
        let text = format!(r#"{{"type":"ping","id":{sent}}}"#);
        let (id, _) = decode(&text, MAX_BODY).unwrap();
        let pong = ServerFrame::Pong { id }.encode();
        assert_eq!(pong, format!(r#"{{"type":"pong","id":{sent}}}"#));
    }
}

proptest! {
    #![proptest_config(config())]

    /// A valid send decodes to what was written: gid, cmid, id, and the body's very text.
    #[test]
    fn a_valid_send_decodes_to_what_was_written(
        (id, gid, cmid, body, text) in (
            prop::option::of(request_id()), gid(), cmid(), body_text()
        ).prop_flat_map(|(id, gid, cmid, body)| {
            let frame = object_text(send_members(id.as_ref(), &gid.to_string(), &cmid, &body));
            (Just(id), Just(gid), Just(cmid), Just(body), frame)
        })
    ) {
        let (decoded_id, request) = decode(&text, MAX_BODY)
            .unwrap_or_else(|e| panic!("{text} refused: {e:?}"));
        prop_assert_eq!(&decoded_id, &id);
        match request {
            ClientRequest::Send { gid: g, cmid: c, body: b } => {
                prop_assert_eq!(g, gid);
                prop_assert_eq!(&c, &cmid);
                prop_assert_eq!(b.get(), body.as_str());
            }
            other => prop_assert!(false, "{} decoded as {:?}", text, other),
        }
        // The reply echoes the id exactly, as the text the client sent.
        let sent = ServerFrame::Sent { id: decoded_id, gid, msgid: 1, ts: 0, dup: false }.encode();
        match &id {
            Some(id) => prop_assert!(sent.contains(&format!("\"id\":{},", json(id))), "{}", sent),
            None => prop_assert!(!sent.contains("\"id\""), "{}", sent),
        }
    }

    /// uids and gids are 1..2^53: 0, 2^53 and above, negative, fractional or non-numeric
    /// gids are refused as `bad_request`, and the error still echoes the id.
    #[test]
    fn gids_outside_1_to_2_pow_53_are_refused(
        (id, text) in (
            request_id(),
            prop_oneof![
                Just(0u64.to_string()),
                (MAX_ID + 1..=u64::MAX).prop_map(|n| n.to_string()),
                Just("18446744073709551616".to_owned()),
                (1..=i64::MAX).prop_map(|n| format!("-{n}")),
                Just("1.0".to_owned()),
                Just("1e3".to_owned()),
                Just("\"7\"".to_owned()),
                Just("null".to_owned()),
            ],
        ).prop_flat_map(|(id, gid)| send_frame(Some(id), &gid, "c-1", "{}"))
    ) {
        prop_assert_eq!(refused(&text, MAX_BODY, id.as_ref()), ErrorCode::BadRequest);
    }

    #[test]
    fn valid_id_accepts_exactly_1_to_2_pow_53(n in prop_oneof![
        Just(0u64), Just(1), Just(MAX_ID), Just(MAX_ID + 1), any::<u64>()
    ]) {
        prop_assert_eq!(valid_id(n).is_ok(), (1..=MAX_ID).contains(&n));
    }

    /// A cmid is 1..64 characters, counted as characters (not bytes or UTF-16 units).
    #[test]
    fn cmids_of_0_or_65_and_more_characters_are_refused(
        (id, text) in (
            request_id(),
            prop_oneof![Just(String::new()), tricky_string(CMID_MAX_CHARS + 1..=CMID_MAX_CHARS + 40)],
        ).prop_flat_map(|(id, cmid)| send_frame(Some(id), "7", &cmid, "1"))
    ) {
        prop_assert_eq!(refused(&text, MAX_BODY, id.as_ref()), ErrorCode::BadRequest);
    }

    /// A cmid holding U+0000 anywhere is refused at decoding: PostgreSQL cannot store it,
    /// and one such send would fail the group commit of everyone's sends batched with it.
    #[test]
    fn cmids_with_a_nul_character_are_refused(
        (id, text) in (request_id(), cmid(), 0..CMID_MAX_CHARS)
            .prop_flat_map(|(id, cmid, at)| {
                let mut chars: Vec<char> = cmid.chars().take(CMID_MAX_CHARS - 1).collect();
                chars.insert(at.min(chars.len()), '\0');
                let cmid: String = chars.into_iter().collect();
                send_frame(Some(id), "7", &cmid, "1")
            })
    ) {
        prop_assert_eq!(refused(&text, MAX_BODY, id.as_ref()), ErrorCode::BadRequest);
    }

    /// A body is refused as `too_large` exactly when its text is over the limit in bytes.
    #[test]
    fn bodies_over_the_limit_are_too_large(
        (body, limit, id, text) in (body_text(), 0..256usize, request_id())
            .prop_flat_map(|(body, limit, id)| {
                let frame = send_frame(Some(id), "7", "c", &body);
                (Just(body), Just(limit), frame)
            })
            .prop_map(|(body, limit, (id, text))| (body, limit, id, text))
    ) {
        if body.len() > limit {
            prop_assert_eq!(refused(&text, limit, id.as_ref()), ErrorCode::TooLarge);
        } else {
            let (echoed, _) = decode(&text, limit).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            prop_assert_eq!(echoed, id);
        }
    }

    /// Any JSON object whose `type` is none of the frame types is `bad_request`, and the
    /// error echoes its id, whatever its other members are.
    #[test]
    fn unknown_types_are_bad_requests_that_echo_the_id(
        kind in prop_oneof![
            tricky_string(0..=12),
            prop::sample::select(FRAME_TYPES.to_vec())
                .prop_map(|t| t.to_uppercase()),
            prop::sample::select(FRAME_TYPES.to_vec()).prop_map(|t| format!("{t} ")),
        ].prop_filter("a known type", |t| !FRAME_TYPES.contains(&t.as_str())),
        id in prop::option::of(request_id()),
        others in prop::collection::btree_map(
            prop_oneof![
                tricky_string(0..=8),
                prop::sample::select(vec!["gid", "cmid", "body", "limit", "groups", "me"])
                    .prop_map(String::from),
            ],
            json_value(),
            0..6,
        ),
    ) {
        let mut frame: Map<String, Value> = others.into_iter().collect();
        frame.insert("type".into(), Value::String(kind));
        frame.remove("id");
        let text = Value::Object(frame).to_string();
        // The id goes in as text: a number need not fit a `Value`.
        let text = match &id {
            Some(id) => format!("{{\"id\":{},{}", json(id), &text[1..]),
            None => text,
        };
        prop_assert_eq!(refused(&text, MAX_BODY, id.as_ref()), ErrorCode::BadRequest);
    }

    /// A pull's limit is 1..=1000 (absent: 100); anything else, or not a u32, is refused.
    #[test]
    fn pull_limits_are_exactly_1_to_1000(
        n in prop_oneof![
            Just(0u64), Just(1), Just(1000), Just(1001), 0..2000u64,
            Just(u64::from(u32::MAX)), Just(u64::from(u32::MAX) + 1), any::<u64>(),
        ],
        id in request_id(),
    ) {
        let within = (1..=u64::from(PULL_MAX_LIMIT)).contains(&n);
        if let Ok(n32) = u32::try_from(n) {
            prop_assert_eq!(pull_limit(Some(n32)).ok(), within.then_some(n32));
        }
        let text = format!(r#"{{"type":"pull","id":{},"gid":7,"limit":{n}}}"#, json(&id));
        if within {
            match decode(&text, MAX_BODY) {
                Ok((echoed, ClientRequest::Pull { gid: 7, after: 0, limit })) => {
                    prop_assert_eq!(u64::from(limit), n);
                    prop_assert_eq!(echoed, Some(id));
                }
                other => prop_assert!(false, "{} decoded as {:?}", text, other),
            }
        } else {
            prop_assert_eq!(refused(&text, MAX_BODY, Some(&id)), ErrorCode::BadRequest);
        }
    }

    /// Whatever the text, decoding returns (no panic), and a refusal is `bad_request` or
    /// `too_large`, with a message.
    #[test]
    fn decode_never_panics(
        text in prop_oneof![
            any::<String>(),
            "[{}\\[\\]\":,0-9a-z\\\\ .eE+-]{0,48}",
            "\\{\"type\":\"(send|ack|pull|ping|sync)\"[{}\\[\\]\":,0-9a-z\\\\ .eE+-]{0,48}",
            json_value().prop_map(|v| v.to_string()),
        ],
        max_body in prop_oneof![Just(MAX_BODY), 0..64usize],
    ) {
        if let Err(err) = decode(&text, max_body) {
            prop_assert!(!err.error.message.is_empty());
            prop_assert!(
                matches!(err.error.code, ErrorCode::BadRequest | ErrorCode::TooLarge),
                "{:?} for {}", err.error.code, text
            );
        }
    }

    /// Versions a client sends in a `sync` come out of decoding as sent; absent ones are 0.
    #[test]
    fn sync_versions_decode_as_sent(
        me in prop::option::of(any::<u64>()),
        lists in prop::option::of((any::<u64>(), any::<u64>())),
        groups in prop::collection::vec((gid(), any::<u64>(), any::<u64>()), 0..8),
        friends in prop::option::of((any::<u64>(), any::<u64>())),
    ) {
        let mut frame = serde_json::json!({"type": "sync", "id": "s1"});
        if let Some(v) = me {
            frame["me"] = serde_json::json!({"user_info_version": v});
        }
        if let Some((list, info)) = lists {
            frame["group_list"] =
                serde_json::json!({"group_list_version": list, "group_info_version": info});
        }
        frame["groups"] = groups
            .iter()
            .map(|&(gid, list, info)| {
                serde_json::json!({"gid": gid, "user_list_version": list, "user_info_version": info})
            })
            .collect();
        if let Some((list, info)) = friends {
            frame["friends"] =
                serde_json::json!({"user_list_version": list, "user_info_version": info});
        }
        let text = frame.to_string();
        match decode(&text, MAX_BODY) {
            Ok((_, ClientRequest::Sync(request))) => {
                prop_assert_eq!(request.me.user_info_version, me.unwrap_or(0));
                let (list, info) = lists.unwrap_or((0, 0));
                prop_assert_eq!(request.group_list.group_list_version, list);
                prop_assert_eq!(request.group_list.group_info_version, info);
                let decoded: Vec<(u64, u64, u64)> = request
                    .groups
                    .iter()
                    .map(|g| (g.gid, g.user_list_version, g.user_info_version))
                    .collect();
                prop_assert_eq!(decoded, groups);
                let (list, info) = friends.unwrap_or((0, 0));
                prop_assert_eq!(request.friends.user_list_version, list);
                prop_assert_eq!(request.friends.user_info_version, info);
            }
            other => prop_assert!(false, "{} decoded as {:?}", text, other),
        }
    }

    /// Merging keeps, per part, the newest version of each field, and the result does not
    /// depend on the order the notices arrive in.
    #[test]
    fn merged_notices_keep_the_newest_of_each_part_in_any_order(
        (notices, shuffled) in prop::collection::vec(sync_notice(), 1..6)
            .prop_flat_map(|notices| (Just(notices.clone()), Just(notices).prop_shuffle()))
    ) {
        let expected = Newest::of(&notices);
        let in_order = merged(&notices);
        prop_assert_eq!(Newest::of([&in_order]), Newest::of(&notices));
        prop_assert_eq!(Newest::of([&merged(&shuffled)]), expected);
        // Folded into an empty notice, each group is named once.
        prop_assert_eq!(in_order.groups.len(), Newest::of([&in_order]).groups.len());
        // As a session does: the first notice held as it came, each later one folded in.
        let mut held = notices[0].clone();
        for (k, later) in notices.iter().enumerate().skip(1) {
            held.merge(later);
            prop_assert_eq!(Newest::of([&held]), Newest::of(&notices[..=k]));
        }
    }

    /// Pull limit of an absent field is the default.
    #[test]
    fn a_pull_without_limit_gets_the_default(gid in gid(), after in any::<u64>()) {
        let text = format!(r#"{{"type":"pull","gid":{gid},"after":{after}}}"#);
        match decode(&text, MAX_BODY) {
            Ok((None, ClientRequest::Pull { gid: g, after: a, limit })) => {
                prop_assert_eq!((g, a, limit), (gid, after, PULL_DEFAULT_LIMIT));
            }
            other => prop_assert!(false, "{} decoded as {:?}", text, other),
        }
    }
}

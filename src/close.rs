//! How the server ends a session: the close codes of the wire contract (RFC 6455 §7.4), each
//! occasion with the reason sent beside its code.
//!
//! A leaf: it names nothing else of the project, so whichever layer closes a session says why
//! with a [`Close`], and only the WebSocket glue turns one into a close frame.

/// The code of a close frame the server sends; `docs/protocol.md` lists them for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// The client's frames break the WebSocket protocol: a continuation frame with no message
    /// open, a new message while a fragmented one is open, an unknown opcode, reserved bits,
    /// an unmasked frame. The client should be fixed.
    ProtocolError = 1002,
    /// A text message, in one frame or reassembled from fragments, that is not UTF-8. The
    /// client should be fixed.
    InvalidPayload = 1007,
    /// 10 bad frames (or refusals of the client's own fault) in a row, or 50 requests refused
    /// `rate_limited` within a second. The client should be fixed.
    Policy = 1008,
    /// A frame, or a message reassembled from fragments, over `HERALD_MAX_FRAME_BYTES`. The
    /// client should not resend it.
    TooBig = 1009,
    /// Storage unavailable, or the service stopping, while the session opens. The client
    /// should reconnect with backoff.
    ServerError = 1011,
    /// The server is restarting (a graceful stop). The client should reconnect, then pull
    /// from `last_ack`.
    Restart = 1012,
    /// The node is full (`HERALD_MAX_SESSIONS`); sent before `hello`. The client should
    /// reconnect later, with backoff.
    TryAgainLater = 1013,
    /// The session's token expired (closed within a second after `exp`). The client should
    /// get a new token and reconnect.
    TokenExpired = 4001,
    /// The account was deactivated. The client should not reconnect.
    Deactivated = 4003,
    /// Too slow: more than `HERALD_OUTBOUND_QUEUE` frames waited for this socket. The client
    /// should reconnect and pull.
    TooSlow = 4008,
    /// The user already holds `HERALD_MAX_SESSIONS_PER_USER` sessions on the node; sent before
    /// `hello`. The client should close one first.
    TooManySessions = 4029,
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code as u16
    }
}

/// Why a session is closed: the code and the reason its close frame carries, chosen together
/// once per occasion below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: CloseCode,
    /// A few words: a close frame has room for 123 bytes of reason.
    pub reason: &'static str,
}

impl Close {
    pub const PROTOCOL_ERROR: Close = Close {
        code: CloseCode::ProtocolError,
        reason: "frames break the WebSocket protocol",
    };
    pub const NOT_UTF8: Close = Close {
        code: CloseCode::InvalidPayload,
        reason: "text message is not UTF-8",
    };
    pub const BAD_FRAMES: Close = Close {
        code: CloseCode::Policy,
        reason: "too many bad frames",
    };
    pub const PAST_RATE_LIMITED: Close = Close {
        code: CloseCode::Policy,
        reason: "requests past rate_limited, persistently",
    };
    pub const FRAME_TOO_BIG: Close = Close {
        code: CloseCode::TooBig,
        reason: "frame too big",
    };
    pub const MESSAGE_TOO_BIG: Close = Close {
        code: CloseCode::TooBig,
        reason: "message too big",
    };
    pub const STORAGE_UNAVAILABLE: Close = Close {
        code: CloseCode::ServerError,
        reason: "storage unavailable, reconnect later",
    };
    pub const STOPPING: Close = Close {
        code: CloseCode::ServerError,
        reason: "service stopping, reconnect later",
    };
    pub const RESTART: Close = Close {
        code: CloseCode::Restart,
        reason: "server restarting",
    };
    pub const SERVER_FULL: Close = Close {
        code: CloseCode::TryAgainLater,
        reason: "server full: try again later",
    };
    pub const TOKEN_EXPIRED: Close = Close {
        code: CloseCode::TokenExpired,
        reason: "token expired",
    };
    pub const DEACTIVATED: Close = Close {
        code: CloseCode::Deactivated,
        reason: "account deactivated",
    };
    pub const TOO_SLOW: Close = Close {
        code: CloseCode::TooSlow,
        reason: "too slow: reconnect and pull",
    };
    pub const TOO_MANY_SESSIONS: Close = Close {
        code: CloseCode::TooManySessions,
        reason: "too many sessions for this user",
    };
}

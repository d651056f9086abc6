//! The gateway's vocabulary: ids and the checks on them, stored messages and cursors, the
//! versioned sync model, group events, the effects of a change and the refusals of one.
//! Plain data, imported by every layer above; it imports nothing of Herald but the
//! client-facing error type.

pub mod effect;
pub mod event;
pub mod ids;
pub mod message;
pub mod refusal;
pub mod role;
pub mod sync;

pub use ids::{check_length, no_nul, now_ms, valid_id, MAX_ID};
pub use message::{GroupCursor, Mark, Marks, MessageView, ReadPosition, Tombstone};
pub use role::Role;

//! The scenarios, one module each; fan-out also serves big-group, slow-consumer and baseline.

pub mod fanout;
pub mod faults;
pub mod idle;
pub mod reconnect;

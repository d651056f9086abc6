//! Integration tests: the real `herald` binary against a real PostgreSQL, driven by real
//! WebSocket and HTTP clients on 127.0.0.1. Run with `scripts/test`.

mod cli;
mod cluster;
mod cluster_tls;
mod convergence;
mod faults;
mod floods;
mod helpers;
mod limits;
mod loadtest_smoke;
mod logs;
mod membership;
mod messaging;
mod migrations;
mod operations;
mod properties;
mod protocol_errors;
mod publish;
mod pull_ack;
mod reads;
mod recall;
mod retention;
mod signals;
mod sync_ops;
mod tokens;
mod user_data;
mod webhooks;

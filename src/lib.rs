//! waq: a durable outbound message queue daemon for the WhatsApp Cloud API.
//!
//! See `docs/ARCHITECTURE.md` for the map of these modules.

pub mod api;
pub mod app;
pub mod borrowed_json;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dispatch;
pub mod error;
pub mod http_head;
pub mod loadrun;
pub mod log_every;
pub mod metrics;
pub mod model;
pub mod sim;
pub mod store;
pub mod systemd;
pub mod validate;
pub mod webhook;
pub mod window;

//! waq: a durable outbound message queue daemon for the WhatsApp Cloud API.
//!
//! See `docs/ARCHITECTURE.md` for the map of these modules.

pub mod cloud;
pub mod error;
pub mod model;
pub mod sim;
pub mod validate;

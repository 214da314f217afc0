//! The socket API: HTTP/1.1 + JSON over a Unix socket (see the socket API reference).
//!
//! `server` owns the socket and the connections, `routes` the table; one file per resource
//! holds its handlers. Handlers hold no queue logic: they validate, write to the store, wait
//! for the commit, and hand messages to the dispatcher.

pub(crate) mod budget;
mod events;
mod extract;
mod inbound;
mod json;
mod messages;
mod peer;
mod recipients;
mod refusal;
mod routes;
mod run_to_end;
mod senders;
mod server;
mod slot;
mod stats;
mod unread_body;
mod view;

pub use events::MAX_HEARTBEAT_S;
pub(crate) use json::{skip_bom, Unneeded};
pub use messages::{LIST_PARAMS, MAX_BATCH_ITEMS};
pub use routes::{router, Ctx, ROUTE_SHAPES};
pub use server::{bind, run, Listener};

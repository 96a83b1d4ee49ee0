//! The types that cross stacklab's crate boundaries, and nothing else.
//!
//! The proxy, control and the backends are separate crates that talk over HTTP; what they say
//! to each other is defined once, here, so the two ends cannot drift.
//!
//! # Layout
//! - [`error`]: the JSON error body every public and admin endpoint answers with.
//! - [`routes`]: pools, members and session routes, and the route feed's messages that control
//!   sends and proxies follow.
//! - [`runtime`]: a runtime's manifest (`backends/<name>/runtime.toml`), read by control and
//!   the conformance suite.
//! - [`session`]: a session's id, the one-way name of its code that everything but the
//!   cookie uses.
//! - [`stack`]: the stack descriptor backends fetch; [`secret`]: values that never print.

pub mod config;
pub mod error;
pub mod routes;
pub mod runtime;
pub mod secret;
pub mod session;
pub mod stack;

pub use error::{ErrorBody, ErrorDetail};
pub use secret::Secret;

//! A session's event stream (`GET /api/session/events`, Server-Sent Events): provisioning
//! steps, state changes, captured requests and cache changes.

use serde::Serialize;
use serde_json::Value;

/// One provisioning or teardown step.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Step {
    pub name: String,
    /// `done`, `failed` or `skipped`.
    pub status: String,
    pub ms: f64,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub enum Event {
    Step(Step),
    State(&'static str),
    /// A captured request (the shape of `GET /api/requests` items).
    Request(Value),
    /// The `GET /api/cache` view, when it changed.
    Cache(Value),
    /// A resource of the session stopped on its own (its container was killed): what happened
    /// and what to do.
    Lost(String),
    Expired,
}

impl Event {
    /// The event as an SSE frame.
    pub fn frame(&self) -> String {
        let (name, data) = match self {
            Event::Step(s) => ("step", serde_json::to_string(s).unwrap_or_default()),
            Event::State(s) => ("state", serde_json::json!({ "state": s }).to_string()),
            Event::Request(v) => ("request", v.to_string()),
            Event::Cache(v) => ("cache", v.to_string()),
            Event::Lost(m) => ("lost", serde_json::json!({ "message": m }).to_string()),
            Event::Expired => ("expired", "{}".to_owned()),
        };
        format!("event: {name}\ndata: {data}\n\n")
    }
}

//! A session's event stream (`GET /api/session/events`, Server-Sent Events): provisioning
//! steps, state changes, captured requests and cache changes.

use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Mutex;

/// A session's one poller of captured requests and the cache view, shared by all of its open
/// event streams (the poll loop is `crate::api`'s, since it reads control's state).
#[derive(Debug, Default)]
pub struct Watch {
    running: AtomicBool,
    /// The last cache view sent, for a stream that opens after it was.
    last_cache: Mutex<Option<Value>>,
}

impl Watch {
    /// Whether the caller became the poller (none was running).
    pub fn claim(&self) -> bool {
        !self.running.swap(true, SeqCst)
    }

    /// The poller stops; it must then look again for streams that opened meanwhile.
    pub fn release(&self) {
        self.running.store(false, SeqCst);
    }

    pub fn last_cache(&self) -> Option<Value> {
        self.last_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn forget_cache(&self) {
        *self.last_cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn set_last_cache(&self, view: Value) {
        *self.last_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(view);
    }
}

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

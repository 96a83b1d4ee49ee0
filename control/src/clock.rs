//! Control's wall clock, in Unix milliseconds, which a test can move forward.
//!
//! Expiry is wall-clock time (it survives a restart of control, and the registry stores it),
//! so this is `SystemTime` plus an offset; `advance` moves it without sleeping.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicU64,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        real + self.offset_ms.load(Relaxed)
    }

    /// Moves the clock forward (tests: "an hour passes").
    pub fn advance(&self, ms: u64) {
        self.offset_ms.fetch_add(ms, Relaxed);
    }
}

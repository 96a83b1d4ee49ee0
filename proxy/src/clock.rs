//! The proxy's clock: milliseconds and nanoseconds since start, read from `tokio::time`, so a
//! test that pauses tokio's time moves ejection, back-off and health intervals without sleeping.

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
        }
    }

    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

//! What every crate's tests share, written once (issue 19; STYLE.md 11):
//!
//! - [`required`], [`missing`] and [`engine_var`]: under CI (`STACKLAB_REQUIRE_SERVICES=1`, which
//!   `scripts/test` sets) a test whose engine or toolchain is absent **fails**, naming what is
//!   missing and how to get it; elsewhere it says it skips. Never a silent pass.
//! - [`eventually`] and [`eventually_ok`]: polling waits, each with a deadline, that fail the
//!   test with what they waited for (or what they last saw) instead of hanging it.
//! - [`temp_dir`]: a fresh folder of the test's own under the system's temp dir.
//!
//! Tests that move tokio's clock (`start_paused`) do not need these waits: there a deadline
//! is reached by advancing time, and `eventually` would advance it too (it sleeps on tokio's
//! clock).

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Under CI (`STACKLAB_REQUIRE_SERVICES=1`) whatever a test needs must be there.
pub fn required() -> bool {
    std::env::var("STACKLAB_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Something a test needs is not there: under CI that fails the test (`what` should say how
/// to get it), elsewhere it is said aloud and the caller skips.
#[track_caller]
pub fn missing(what: impl Display) {
    if required() {
        panic!("{what}, and STACKLAB_REQUIRE_SERVICES=1 (scripts/test installs and starts every engine)");
    }
    eprintln!("skipped: {what}");
}

/// An engine's address from the environment (`scripts/test` sets `STACKLAB_TEST_*`); unset:
/// [`missing`], and `None` for the caller to skip.
#[track_caller]
pub fn engine_var(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            missing(format!(
                "{var} is not set (run the tests with scripts/test)"
            ));
            None
        }
    }
}

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `cond` holds, looking every 20 ms; fails the test naming `what` once `within`
/// has passed (on tokio's clock, so a paused clock moves on its own).
#[track_caller]
pub fn eventually<'a, F, Fut>(
    what: &'a str,
    within: Duration,
    mut cond: F,
) -> impl Future<Output = ()> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = bool> + 'a,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + within;
        while !cond().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {within:?} waiting for {what} ({caller})"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// [`eventually`] for a check that says what it saw: `Ok` once it holds; at the deadline the
/// test fails with the last `Err`.
#[track_caller]
pub fn eventually_ok<'a, F, Fut, E>(within: Duration, mut check: F) -> impl Future<Output = ()> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = Result<(), E>> + 'a,
    E: Display,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match check().await {
                Ok(()) => return,
                Err(seen) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out after {within:?} ({caller}): {seen}"
                ),
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A new, empty folder under the system's temp dir: `stacklab-{name}-{pid}-{random}`, so
/// tests running at once (and runs left behind) never share one.
pub fn temp_dir(name: &str) -> PathBuf {
    use std::hash::{BuildHasher, RandomState};
    let nonce = RandomState::new().hash_one(std::time::SystemTime::now()) & 0xffff_ffff;
    let dir = std::env::temp_dir().join(format!(
        "stacklab-{name}-{}-{nonce:08x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("a folder under the temp dir");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_never_holds_fails_at_its_deadline_naming_what_it_waited_for() {
        let waited = tokio::spawn(eventually("the moon", Duration::from_secs(5), || async {
            false
        }));
        let panic = waited.await.unwrap_err().into_panic();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("waiting for the moon"), "{message}");
        assert!(message.contains("testkit/src/lib.rs"), "{message}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_returns_once_its_condition_holds_and_ok_reports_the_last_seen() {
        let mut n = 0;
        eventually("three looks", Duration::from_secs(5), || {
            n += 1;
            std::future::ready(n >= 3)
        })
        .await;
        assert_eq!(n, 3);
        let waited = tokio::spawn(eventually_ok(Duration::from_secs(1), || async {
            Err::<(), _>("saw 503")
        }));
        let panic = waited.await.unwrap_err().into_panic();
        assert!(panic.downcast_ref::<String>().unwrap().ends_with("saw 503"));
    }

    #[test]
    fn temp_dirs_are_new_and_apart() {
        let (a, b) = (temp_dir("kit"), temp_dir("kit"));
        assert_ne!(a, b);
        assert!(a.is_dir() && std::fs::read_dir(&a).unwrap().next().is_none());
        let _ = (std::fs::remove_dir_all(a), std::fs::remove_dir_all(b));
    }
}

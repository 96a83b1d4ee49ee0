//! The backend conformance suite: one set of checks against the HTTP API, run over every
//! database × cache pair on the real engines `scripts/test` starts.
//!
//! Engines come from `STACKLAB_TEST_POSTGRES_URL`, `STACKLAB_TEST_MYSQL_URL`,
//! `STACKLAB_TEST_REDIS_URL` and `STACKLAB_TEST_MEMCACHED_ADDR`. Under CI
//! (`STACKLAB_REQUIRE_SERVICES=1`) a missing one fails the test that needs it.

mod conformance;
mod helpers;
mod security;
mod suite;

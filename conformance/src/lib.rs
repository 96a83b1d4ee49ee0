//! The runtime-neutral conformance suite: one definition of what a stacklab runtime must do,
//! checked over real sockets against every runtime in `backends/` and across every pair of them.
//!
//! A runtime is whatever its manifest (`backends/<name>/runtime.toml`, see
//! `stacklab_types::runtime`) starts. The kit starts that process exactly as control does (the
//! launch contract in `backends/CONTRACT.md`: credential on stdin, address on the first stdout
//! line, exit on stdin EOF), stands in for control's admin API with a small descriptor server
//! of its own, and talks to the instance as the proxy would. Nothing of a runtime's code is
//! linked in: Rust is tested as a process like any other, so a runtime passes or fails on what
//! it does on the wire and what it leaves in the databases.
//!
//! Engines come from `scripts/test` (`STACKLAB_TEST_POSTGRES_URL`, `STACKLAB_TEST_MYSQL_URL`,
//! `STACKLAB_TEST_MONGO_URL`, `STACKLAB_TEST_REDIS_URL`, `STACKLAB_TEST_MEMCACHED_ADDR`).
//! Under CI (`STACKLAB_REQUIRE_SERVICES=1`) a missing engine, or a runtime whose `check` fails,
//! fails the test that needs it; outside CI the test says aloud what it skipped.
//!
//! # Layout
//! - [`runtime`]: the runtimes found in `backends/`, their checks, the pairs to test across.
//! - [`instance`]: one running instance of a runtime, its config file and captured output.
//! - [`control`]: the descriptor server that stands in for control's admin API.
//! - [`engines`]: databases and caches under test, one fresh database per stack.
//! - [`api`]: an HTTP client for one session, as the proxy forwards it.
//! - [`raw`]: rows read back with each engine's own client, and the storage formats checked
//!   from first principles (a hash verified with the hashing library, a value decrypted with
//!   AES-GCM), not with any runtime's code.
//! - [`suite`]: the checks themselves, each a function a test (here or in control) calls.

pub mod api;
pub mod control;
pub mod engines;
pub mod instance;
pub mod raw;
pub mod runtime;
pub mod suite;

pub use api::{Answer, Api};
pub use control::DescriptorServer;
pub use engines::{engine_url, stack, unique, Db, Kv, Stack};
pub use instance::{Instance, Settings};
pub use runtime::Runtime;

pub use stacklab_testkit::required;

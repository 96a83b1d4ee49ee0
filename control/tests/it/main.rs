//! control's integration tests: real proxy, control and backend processes on port 0, real
//! engines from `scripts/test`.

/// The backend's conformance suite (and its helpers), included by path so the docker tests
/// run the very same checks on the containers a docker session gets.
#[path = "../../../backends/rust/tests/it"]
#[allow(dead_code, unused_imports)]
mod backend_suite {
    pub mod helpers;
    pub mod suite;
}
mod at_rest;
mod binary;
mod docker;
mod helpers;
mod hostile;
mod isolation;
mod lifecycle;
mod runtimes;
mod shared;

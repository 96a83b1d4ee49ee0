//! control's integration tests: real proxy, control and backend processes on port 0, real
//! engines from `scripts/test`. The runtime contract itself is checked by `stacklab-conformance`
//! (whose users check `docker.rs` also runs on docker sessions).

mod at_rest;
mod binary;
mod docker;
mod drills;
mod helpers;
mod hostile;
mod isolation;
mod lifecycle;
mod runtimes;
mod shared;

//! control's integration tests: real proxy, control and backend processes on port 0, real
//! engines from `scripts/test`.

mod binary;
mod docker;
mod helpers;
mod lifecycle;
mod shared;

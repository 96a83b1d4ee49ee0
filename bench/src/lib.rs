//! stacklab-bench: a load generator for HTTP/1.1, HTTP/2 and HTTP/3, and the side-by-side
//! comparison of stacklab's proxy with nginx and HAProxy (`compare`).
//!
//! The generator ([`load`]) runs closed-loop (a fixed number of connections, each sending as
//! fast as answers come) or open-loop (a fixed rate, latency measured from when each request
//! was due, so a stall is not hidden by the requests it delayed), records latency in HDR
//! histograms, and reports JSON. [`compare`] starts one upstream ([`upstream`]), puts each
//! proxy in front of it with equivalent settings ([`peers`]), drives them in turn, reads their
//! CPU and memory from `/proc` ([`procstat`]), checks our generator against `wrk` and
//! `h2load` ([`external`]) and writes the tables under `bench/results/`. See `bench/README.md`
//! for the method and the latest numbers.
//!
//! # Layout
//!
//! - [`load`]: the generator; [`load::conn`] opens connections of each protocol.
//! - [`upstream`]: the fast upstream (hyper, fixed small answer, or 1 MiB streamed).
//! - [`peers`]: configs for stacklab, nginx and HAProxy; starting and stopping them.
//! - [`feed`]: a route feed that gives the proxy 100k sessions in one snapshot.
//! - [`procstat`]: CPU seconds and peak RSS of a process tree.
//! - [`external`]: running and reading `wrk` and `h2load`.
//! - [`instructions`]: instructions per request under callgrind, and the baseline check.
//! - [`tls`]: the shared self-signed certificate and client configs.
//! - [`drill`]: faults injected into real `stacklab` processes under load, one line each.
//! - [`compare`]: scenarios, rounds and runs; [`compare::report`] the rows, ratios, targets
//!   and files.

pub mod compare;
pub mod drill;
pub mod external;
pub mod feed;
pub mod instructions;
pub mod launch;
pub mod load;
pub mod peers;
pub mod procstat;
pub mod tls;
pub mod upstream;

//! The proxy's integration tests: real proxy, real upstreams, real sockets, port 0.

mod balancing;
mod client_faults;
mod failover;
mod feed;
mod health;
mod helpers;
mod http1;
mod http3;
mod lifecycle;
mod limits;
mod protocols;
mod routing;

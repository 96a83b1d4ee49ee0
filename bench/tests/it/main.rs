//! The generator against real servers on port 0: our upstream alone, stacklab's proxy
//! in-process (HTTP/1.1, HTTP/2, HTTP/3, and sessions from the bench's route feed), and
//! nginx as the comparison starts it. Runs are a fraction of a second; no speed is asserted.

mod cli;
mod generator;
mod nginx;
mod proxy;

use stacklab_bench::load::{self, LoadSpec, Protocol};
use std::net::SocketAddr;
use std::time::Duration;

pub use stacklab_testkit::temp_dir;

/// Our upstream on a loopback port.
pub async fn upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(stacklab_bench::upstream::serve(l));
    addr
}

/// A short closed-loop run.
pub fn short(dialer: load::conn::Dialer, connections: usize, streams: usize) -> LoadSpec {
    LoadSpec {
        dialer,
        connections,
        streams,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(50),
        rate: None,
        new_connection_per_request: false,
        sampler: None,
    }
}

/// A dialer for GET `path`.
pub fn dialer(
    addr: SocketAddr,
    protocol: Protocol,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    path: &str,
) -> load::conn::Dialer {
    load::dialer(addr, protocol, tls, "localhost", path, &[]).unwrap()
}

/// Every request answered, none failed.
pub fn assert_clean(r: &load::LoadReport) {
    assert!(r.ok > 0, "no request answered: {r:?}");
    assert_eq!(r.errors + r.bad_status, 0, "{r:?}");
    assert!(
        r.latency_us.p50 > 0 && r.latency_us.p50 <= r.latency_us.p99,
        "{r:?}"
    );
}

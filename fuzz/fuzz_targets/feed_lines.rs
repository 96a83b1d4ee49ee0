//! The route feed as bytes off the wire: the input is the feed's body, cut into chunks where
//! the network might cut it, and handed to the proxy's feed follower line by line
//! (`stacklab_proxy::feed::apply_lines`) on top of the embedded config's table.
//!
//! Nothing may panic. A line that is not a feed message ends the connection (an error), as it
//! does in `feed::follow`; after every chunk the table still holds only what the route table
//! accepts: pools that pass `check_pool`, sessions with a valid code.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stacklab_proxy::config::{check_pool, Config};
use stacklab_proxy::feed;
use stacklab_proxy::metrics::Metrics;
use stacklab_proxy::table::Routing;
use std::collections::BTreeMap;
use std::sync::OnceLock;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_toml(stacklab_proxy::DEFAULT_CONFIG, &BTreeMap::new())
            .expect("the embedded config is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let cfg = config();
    let routing = Routing::new(Metrics::new());
    routing.set_config(&cfg.routes, &cfg.pools);

    let mut buf = BytesMut::new();
    let mut since = None;
    let mut rest = body;
    let mut step = u32::from(seed);
    while !rest.is_empty() {
        // Chunks of 1 to 64 bytes, or the whole rest, as the seed byte says.
        step = step.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = if seed & 0x80 != 0 {
            rest.len()
        } else {
            (step >> 16) as usize % 64 + 1
        };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        let before = since;
        let result = feed::apply_lines(&routing, &mut buf, &mut since);

        let table = routing.load();
        for p in table.pool_specs() {
            assert!(
                check_pool(&p).is_empty(),
                "the table took a bad pool: {p:?}"
            );
        }
        for s in table.session_routes() {
            assert!(
                stacklab_types::session::is_id(&s.id),
                "the table took a bad id: {s:?}"
            );
        }
        if since != before {
            assert!(since.is_some());
        }
        assert!(
            !buf.contains(&b'\n') || result.is_err(),
            "a whole line was left unread"
        );
        if result.is_err() {
            break; // the follower drops the connection
        }
    }
});

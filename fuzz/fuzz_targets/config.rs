//! Config parsing as `stacklab check-config` does it: TOML text through the proxy's
//! `Config::from_toml` (raw, environment, one validation step), then the `[backend]`,
//! `[control]`, `[shared]` and `[docker]` sections through their own validation.
//!
//! The input is the file's text. Lines `#env NAME=VALUE` in it (TOML comments) also set that
//! environment variable, so the environment overrides are fuzzed too.
//!
//! Nothing may panic; a refused file names at least one key, every problem has a key and a
//! message; a config that passes builds a route table (that step `expect`s a validated
//! config), and its pools pass the same checks the admin API and the feed apply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacklab_backend::config::ServeConfig;
use stacklab_control::config::ControlConfig;
use stacklab_proxy::config::{check_pool, Config};
use stacklab_proxy::metrics::Metrics;
use stacklab_proxy::table::Routing;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#env ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();

    let cfg = match Config::from_toml(text, &env) {
        Ok(c) => c,
        Err(report) => {
            assert!(!report.errors.is_empty(), "refused without a reason");
            for e in &report.errors {
                assert!(!e.path.is_empty() && !e.message.is_empty(), "{e:?}");
            }
            let _ = report.to_string();
            return;
        }
    };

    let mut problems = ServeConfig::from_section(cfg.other.get("backend"))
        .err()
        .unwrap_or_default();
    problems.extend(
        ControlConfig::from_config(&cfg, &|k| env.get(k).cloned())
            .err()
            .unwrap_or_default(),
    );
    for (key, message) in &problems {
        assert!(
            !key.is_empty() && !message.is_empty(),
            "{key:?}: {message:?}"
        );
    }

    for p in &cfg.pools {
        assert!(
            check_pool(p).is_empty(),
            "{p:?} passed validation but not check_pool"
        );
    }
    for r in &cfg.routes {
        assert!(r.path.starts_with('/'), "{r:?}");
    }
    let routing = Routing::new(Metrics::new());
    routing.set_config(&cfg.routes, &cfg.pools);
    assert_eq!(routing.load().routes.len(), cfg.routes.len());
});

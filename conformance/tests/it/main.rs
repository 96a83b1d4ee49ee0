//! The conformance suite over every runtime in `backends/`, and across every pair of them.
//!
//! Each runtime gets a module of the same tests (`rust::postgres_redis_through`, …), each
//! test starting its own instance as a process from the runtime's manifest. `across::*` runs
//! the cross-runtime checks over every ordered pair of available runtimes.
//!
//! To add a runtime: give it `backends/<name>/runtime.toml`, and add `<name>` to the
//! `runtimes!` list below (`every_runtime_in_backends_is_tested` fails until it is there).

use stacklab_conformance::engines::{Db, Kv};
use stacklab_conformance::runtime;
use stacklab_conformance::suite;
use stacklab_types::stack::WritePolicy;

/// Every database × cache × write policy pair of runtime `$rt`: the users contract and isolation.
macro_rules! combos {
    ($rt:ident; $($name:ident: $db:ident, $kv:ident, $policy:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(rt) = runtime::runtime(stringify!($rt)) else { return };
                if !rt.offers(Db::$db) {
                    return;
                }
                suite::combo(&rt, Db::$db, Kv::$kv, WritePolicy::$policy).await;
            }
        )*
    };
}

/// One test per check of the kit that takes only the runtime.
macro_rules! checks {
    ($rt:ident; $($name:ident => $check:path;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(rt) = runtime::runtime(stringify!($rt)) else { return };
                $check(&rt).await;
            }
        )*
    };
}

/// The tests of one runtime, in a module named after it.
macro_rules! runtime_tests {
    ($rt:ident) => {
        mod $rt {
            use super::*;

            combos! { $rt;
                sqlite_memory_aside: Sqlite, Memory, CacheAside;
                sqlite_memory_through: Sqlite, Memory, WriteThrough;
                sqlite_redis_aside: Sqlite, Redis, CacheAside;
                sqlite_memcached_aside: Sqlite, Memcached, CacheAside;
                sqlite_none: Sqlite, None, CacheAside;
                postgres_memory_aside: Postgres, Memory, CacheAside;
                postgres_redis_aside: Postgres, Redis, CacheAside;
                postgres_redis_through: Postgres, Redis, WriteThrough;
                postgres_memcached_through: Postgres, Memcached, WriteThrough;
                mysql_memory_aside: Mysql, Memory, CacheAside;
                mysql_redis_aside: Mysql, Redis, CacheAside;
                mysql_memcached_aside: Mysql, Memcached, CacheAside;
                mysql_memcached_through: Mysql, Memcached, WriteThrough;
                mongo_memory_aside: Mongo, Memory, CacheAside;
                mongo_redis_through: Mongo, Redis, WriteThrough;
            }

            checks! { $rt;
                every_password_mode_is_stored_as_it_says => suite::password_modes;
                encrypted_fields_are_ciphertext_in_the_row_and_still_searchable => suite::encryption;
                the_benchmark_measures_and_leaves_no_trace => suite::benchmark;
                bad_input_is_refused_clearly_and_changes_nothing => suite::bad_input;
                oversized_bodies_are_refused_with_413 => suite::oversized_bodies;
                graphql_bombs_are_refused_before_they_run => suite::graphql_bombs;
                sessions_are_required_and_unknown_ones_are_gone => suite::sessions_required;
                the_internal_endpoint_takes_only_the_runtime_credential => suite::internal_endpoint;
                redis_policy_changes_show_in_redis_and_shared_servers_refuse => suite::redis_policy;
                stdin_eof_and_sigterm_finish_in_flight_requests_and_exit => suite::graceful_exit;
            }
        }
    };
}

/// Every runtime the suite runs; each must have `backends/<name>/runtime.toml`.
macro_rules! runtimes {
    ($($rt:ident),* $(,)?) => {
        const LISTED: &[&str] = &[$(stringify!($rt)),*];
        $(runtime_tests!($rt);)*
    };
}

runtimes!(java, node, python, ruby, rust);

/// A runtime added to `backends/` is not silently left out of the suite.
#[test]
fn every_runtime_in_backends_is_tested() {
    for m in runtime::manifests() {
        assert!(
            LISTED.contains(&m.name.as_str()),
            "backends/{} has a runtime.toml, but the suite does not run it: add `{}` to \
             `runtimes!(...)` in conformance/tests/it/main.rs",
            m.dir.file_name().unwrap_or_default().to_string_lossy(),
            m.name
        );
    }
}

/// Rows and cache entries written through one runtime, read through another.
mod across {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        suite::across(Db::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres() {
        suite::across(Db::Postgres).await;
    }

    #[tokio::test]
    async fn mysql() {
        suite::across(Db::Mysql).await;
    }

    #[tokio::test]
    async fn mongo() {
        suite::across(Db::Mongo).await;
    }
}

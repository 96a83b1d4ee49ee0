//! The checks, each a function of the runtime (or the instance) under test, so this crate's
//! tests run them per runtime and control's docker tests run [`users`] on docker sessions.
//!
//! - [`users`]: the users contract on one stack, REST and GraphQL, cache outcomes per write
//!   policy, and a second session's isolation.
//! - [`storage`]: every password mode and encryption at rest, read back raw; the benchmark.
//! - [`hostile`]: bad input of every kind, answered with the JSON error and changing nothing.
//! - [`sessions`]: the session header, the internal endpoint's credential, Redis policy
//!   changes, and exiting when stdin closes.
//! - [`across`]: rows written through one runtime read, verified and decrypted through another.

mod across;
mod hostile;
mod sessions;
mod storage;
mod users;

pub use across::across;
pub use hostile::{bad_input, graphql_bombs, oversized_bodies};
pub use sessions::{graceful_exit, internal_endpoint, redis_policy, sessions_required};
pub use storage::{benchmark, encryption, password_modes};
pub use users::{combo, users};

use crate::{Api, DescriptorServer, Instance, Runtime, Settings, Stack};

/// One runtime's instance and the descriptor server it fetches its stacks from.
#[derive(Debug)]
pub struct Lab {
    pub control: DescriptorServer,
    pub instance: Instance,
}

impl Lab {
    /// An instance of `runtime` with the default [`Settings`].
    pub async fn start(runtime: &Runtime) -> Lab {
        Self::with(runtime, Settings::default()).await
    }

    pub async fn with(runtime: &Runtime, settings: Settings) -> Lab {
        let control = DescriptorServer::start().await;
        let instance =
            Instance::start(runtime, &control.url(), control.credential(), &settings).await;
        Lab { control, instance }
    }

    /// Serves `stack` from now on (as a session of this runtime).
    pub fn serve(&self, stack: &Stack) {
        let mut d = stack.descriptor.clone();
        d.runtime.clone_from(&self.instance.runtime);
        self.control.insert(&d);
    }

    /// A client for `stack`'s session.
    pub fn api(&self, stack: &Stack) -> Api {
        Api::new(&self.instance.url(), Some(stack.session()))
    }

    /// A client for any session code, or none.
    pub fn api_for(&self, session: Option<&str>) -> Api {
        Api::new(&self.instance.url(), session)
    }
}

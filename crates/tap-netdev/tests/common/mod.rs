//! Runs a test body in a network namespace of its own.

use std::future::Future;

use anyhow::Context;
use nix::sched::{CloneFlags, unshare};

/// Runs `body` on a new thread that first moves into a new network
/// namespace, on a current-thread tokio runtime of that thread. Taps, the
/// rtnetlink socket and bridges made by `body` live in that namespace, which
/// vanishes with everything in it when the thread ends, whether the test
/// passed or not; the host's networking is never touched.
///
/// Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and /dev/net/tun, and fails
/// loudly without them.
pub(crate) fn in_netns<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let thread = std::thread::spawn(move || -> anyhow::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)
            .context("unshare(CLONE_NEWNET): these tests must run as root")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(body())
    });
    match thread.join() {
        Ok(result) => result.expect("test body"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

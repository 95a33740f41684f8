//! Graceful shutdown on SIGTERM or ctrl-c.
//!
//! One [`CancellationToken`] reaches every task: the accept loop stops taking
//! connections, connections finish the requests they applied and close with
//! "going away", and the store is flushed before the process exits.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// A token cancelled on the first SIGTERM or ctrl-c. The handlers are in place
/// when it returns: a signal sent the moment the hub says it listens must stop
/// it gracefully, not kill it.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let signalled = wait_for_signal();
    tokio::spawn(async move {
        signalled.await;
        info!("shutdown requested");
        cancel.cancel();
    });
    token
}

/// Installs the handlers now, not when the future is first polled (a spawned
/// task may run only after the caller has announced that it listens).
#[cfg(unix)]
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                one.recv().await;
            }
            // No handler could be installed: no signal can reach the hub gracefully, so none is awaited.
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
}

#[cfg(not(unix))]
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

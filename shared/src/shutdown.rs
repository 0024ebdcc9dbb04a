//! Graceful shutdown: one token for the whole process, children per service, and the signal
//! that pulls it.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Asks running work to stop. Cloning shares the signal; [`Shutdown::child`] makes a signal
/// that fires with its parent but can also fire alone.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self(CancellationToken::new())
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once shutdown was asked for.
    pub async fn triggered(&self) {
        self.0.cancelled().await;
    }

    /// An owned future resolving on shutdown, for APIs that want `'static` futures.
    pub fn triggered_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        self.0.clone().cancelled_owned()
    }

    pub fn child(&self) -> Shutdown {
        Shutdown(self.0.child_token())
    }
}

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() -> std::io::Result<Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => Ok(Signal::Terminate),
        _ = int.recv() => Ok(Signal::Interrupt),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("work still running after the {0:?} drain deadline")]
pub struct DrainTimedOut(pub Duration);

/// Awaits `work` for at most `deadline`.
pub async fn drain<F: Future>(work: F, deadline: Duration) -> Result<F::Output, DrainTimedOut> {
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| DrainTimedOut(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn children_follow_their_parent_but_not_the_reverse() {
        let root = Shutdown::new();
        let a = root.child();
        let b = root.child();
        a.trigger();
        assert!(a.is_triggered());
        assert!(!b.is_triggered() && !root.is_triggered());
        root.trigger();
        b.triggered().await;
    }

    #[tokio::test]
    async fn drain_gives_up_at_the_deadline() {
        let slow = drain(std::future::pending::<()>(), Duration::from_millis(20)).await;
        assert!(slow.is_err());
        let quick = drain(async { 7 }, Duration::from_secs(1)).await;
        assert_eq!(quick.ok(), Some(7));
    }
}

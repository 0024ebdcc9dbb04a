//! The HTTP target as mih sees it: a TCP front on a fixed port that forwards each connection to
//! one of several `HttpSink`s, holds it without answering, or closes its port — switchable while
//! load runs. Every switch drops the open connections, so no kept-alive connection outlives the
//! mode it was made in.
//!
//! Only the sinks that answer 2xx within the service's timeout count as "delivered"; the others
//! (500, 422) record what mih tried, which never counts as a delivery.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass the connection to this address.
    Forward(SocketAddr),
    /// The port is closed: connections are refused.
    Refuse,
    /// Accept, read, never answer.
    Hang,
}

pub struct FaultyTarget {
    port: u16,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl FaultyTarget {
    pub async fn start(initial: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = listener.local_addr().expect("address").port();
        let (mode, receiver) = watch::channel(initial);
        let task = tokio::spawn(serve(port, listener, receiver));
        Self { port, mode, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the mode. Setting the mode it already has changes nothing: a switch drops
    /// open connections, and dropping them with requests in flight makes the dispatcher retry
    /// requests the sink already answered (duplicates the suite would otherwise count).
    pub fn set(&self, mode: Mode) {
        self.mode.send_if_modified(|current| {
            let changed = *current != mode;
            *current = mode;
            changed
        });
    }
}

impl Drop for FaultyTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(port: u16, listener: TcpListener, mut mode: watch::Receiver<Mode>) {
    let mut listener = Some(listener);
    loop {
        let current = *mode.borrow_and_update();
        if current == Mode::Refuse {
            listener = None;
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        }
        let open = match listener.take() {
            Some(open) => open,
            // The port was closed a moment ago; take it again (SO_REUSEADDR is set by std).
            None => match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(open) => open,
                Err(e) => {
                    tracing::warn!(error = %e, port, "cannot reopen the target's port");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        // Connections watch for the next switch from here (a clone sees what we have seen).
        let watcher = mode.clone();
        loop {
            tokio::select! {
                changed = mode.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                accepted = open.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(connection(stream, current, watcher.clone()));
                    }
                }
            }
        }
        listener = Some(open);
    }
}

async fn connection(mut stream: TcpStream, mode: Mode, mut changes: watch::Receiver<Mode>) {
    let work = async {
        match mode {
            Mode::Forward(to) => {
                let mut backend = TcpStream::connect(to).await?;
                tokio::io::copy_bidirectional(&mut stream, &mut backend).await?;
            }
            Mode::Hang => {
                let mut buffer = [0u8; 4096];
                while stream.read(&mut buffer).await? > 0 {}
            }
            Mode::Refuse => {}
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        _ = work => {}
        _ = changes.changed() => {}
    }
}

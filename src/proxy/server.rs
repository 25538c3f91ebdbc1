//! The proxy's listener: accepts connections, serves HTTP/1.1 with a header-read timeout,
//! and drains in-flight requests on shutdown.
//!
//! Binding happens in [`bind`], separately from serving, so that a port already taken (or a
//! non-loopback address without explicit permission) fails boot before anything else starts.
//!
//! The proxy serves on threads of its own ([`Threads`]), one per CPU up to [`MAX_THREADS`],
//! each a single-threaded runtime accepting from the same listening socket with its own pool
//! of upstream connections: a request, its connection and its upstream connection stay on one
//! thread, so none waits on a wake-up from another thread (a quarter of the CPU of a small
//! request on a shared runtime), while large bodies still hash on every CPU at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::forward::{self, State, Worker};

/// At most this many serving threads, whatever the number of CPUs.
pub const MAX_THREADS: usize = 4;

/// Per-connection read buffer, at most: request headers must fit (larger ones get 431), and
/// body reads take up to this much per call. 32 KiB halves the reads of a large body against
/// 16 KiB (1 MiB: about 100 µs less CPU); 64 KiB costs more memory per connection than it
/// saves CPU (`scripts/bench proxy`).
const READ_BUFFER: usize = 32 * 1024;

/// How long in-flight requests may take to finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("proxy: refusing to listen on {0}, which is not a loopback address (a signing proxy reachable from the network signs for anyone who can reach it); pass --allow-non-loopback to insist")]
    NotLoopback(SocketAddr),
    #[error("proxy: refusing to serve metrics on {0}, which is not a loopback address; use a loopback address such as 127.0.0.1:9091 (scrape it locally, or through the node's Prometheus)")]
    MetricsNotLoopback(SocketAddr),
    #[error("proxy: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("proxy: {0}")]
    Setup(String),
}

/// Binds `addr`, refusing non-loopback addresses unless `allow_non_loopback`.
pub async fn bind(addr: SocketAddr, allow_non_loopback: bool) -> Result<TcpListener, Error> {
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(Error::NotLoopback(addr));
    }
    let bind = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // A deep accept queue: Prometheus opens up to `max_shards` connections at once.
        socket.listen(4096)
    };
    bind().map_err(|source| Error::Bind { addr, source })
}

/// The serving threads, prepared (everything that can fail is done here, at boot).
pub struct Threads {
    threads: Vec<Thread>,
}

struct Thread {
    listener: std::net::TcpListener,
    runtime: tokio::runtime::Runtime,
    worker: Arc<Worker>,
}

impl Threads {
    /// One serving thread per CPU, at most [`MAX_THREADS`], each with a clone of `listener`
    /// and its own upstream client.
    pub fn new(
        listener: TcpListener,
        state: Arc<State>,
        connector: hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    ) -> Result<Self, Error> {
        let count = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS);
        let setup = |e: std::io::Error| Error::Setup(format!("serving threads: {e}"));
        let listener = listener.into_std().map_err(setup)?;
        let threads = (0..count)
            .map(|_| {
                Ok(Thread {
                    listener: listener.try_clone().map_err(setup)?,
                    runtime: tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(setup)?,
                    worker: Arc::new(Worker {
                        client: forward::client(&state.settings, connector.clone()),
                        state: state.clone(),
                    }),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Threads { threads })
    }

    /// Serves on every thread until `shutdown` is cancelled and each has drained.
    pub async fn serve(self, shutdown: CancellationToken) {
        let mut finished = Vec::new();
        for (i, thread) in self.threads.into_iter().enumerate() {
            let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
            let shutdown = shutdown.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("moninit-proxy-{i}"))
                .spawn(move || {
                    let Thread {
                        listener,
                        runtime,
                        worker,
                    } = thread;
                    runtime.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => serve(listener, worker, shutdown).await,
                            Err(e) => {
                                tracing::error!(error = %e, "proxy: a serving thread cannot listen")
                            }
                        }
                    });
                    drop(runtime);
                    let _ = done.send(());
                });
            match spawned {
                Ok(_) => finished.push(finished_rx),
                Err(e) => tracing::error!(error = %e, "proxy: cannot start a serving thread"),
            }
        }
        for thread in finished {
            let _ = thread.await;
        }
    }
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish (bounded).
async fn serve(listener: TcpListener, worker: Arc<Worker>, shutdown: CancellationToken) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = worker.state.settings.header_timeout;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let worker = worker.clone();
        let service = service_fn(move |req| {
            let worker = worker.clone();
            async move { Ok::<_, std::convert::Infallible>(forward::handle(worker, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            // Bounds what hyper reads ahead per connection while a request waits for a slot.
            .max_buf_size(READ_BUFFER)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("proxy drained"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("proxy: in-flight requests cut off after the drain timeout"),
    }
}

//! The server's own accept loop. `axum::serve` has no connection limit and no timeouts; this
//! one bounds what one client can hold:
//! - at most `max_connections` connections at once: past that, new ones wait in the kernel's
//!   backlog until one closes;
//! - a request's headers must arrive within `header_timeout` of the connection being ready for
//!   them (a client that opens connections and trickles headers is cut off);
//! - a request body that stalls for `body_idle` is cut off, and so is one that arrives slower
//!   than `body_min_rate` bytes per second over any whole window of `rate_window`: a slow but
//!   steady upload of a large scan goes through, a trickle that only holds the connection does
//!   not.
//!
//! Each limit set to 0 is off (what a benchmark of the limits' cost compares against).
//!
//! On shutdown the listener closes, requests in flight finish, and connections close.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// What one client may hold.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Connections open at once (`None`: no limit).
    pub max_connections: Option<usize>,
    /// Time to send a request's headers (`None`: no limit).
    pub header_timeout: Option<Duration>,
    /// Longest pause inside a request body (`None`: no limit).
    pub body_idle: Option<Duration>,
    /// Slowest average body rate over a window of `rate_window`, bytes per second (0: none).
    pub body_min_rate: u64,
    /// How long a body's arrival rate is averaged over.
    pub rate_window: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = limits
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n.max(1))));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(100);
    let timed = limits.body_idle.is_some() || limits.body_min_rate > 0;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = match &permits {
            Some(permits) => tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => Some(p),
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = if timed {
                request.map(|body| Body::new(Timed::new(body, limits)))
            } else {
                request.map(Body::new)
            };
            request.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {DRAIN:?}; stopping anyway");
    }
    Ok(())
}

/// Why a body was cut off.
#[derive(Debug, thiserror::Error)]
pub enum BodyTimeout {
    /// Nothing arrived for too long.
    #[error("the request body stalled")]
    Idle,
    /// It arrived too slowly.
    #[error("the request body arrived too slowly")]
    TooSlow,
}

/// A request body under the idle and minimum-rate limits.
struct Timed {
    inner: Incoming,
    /// The longest pause, and when the current one runs out (`None`: no idle limit).
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    min_per_window: u64,
    window: Duration,
    window_started: Instant,
    window_bytes: u64,
}

impl Timed {
    fn new(inner: Incoming, limits: ServeLimits) -> Self {
        Self {
            inner,
            idle: limits
                .body_idle
                .map(|idle| (idle, Box::pin(tokio::time::sleep(idle)))),
            min_per_window: u64::try_from(
                u128::from(limits.body_min_rate) * limits.rate_window.as_millis() / 1000,
            )
            .unwrap_or(u64::MAX),
            window: limits.rate_window,
            window_started: Instant::now(),
            window_bytes: 0,
        }
    }
}

impl http_body::Body for Timed {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let now = Instant::now();
                if let Some(data) = frame.data_ref() {
                    this.window_bytes += data.len() as u64;
                }
                if now.duration_since(this.window_started) >= this.window {
                    if this.window_bytes < this.min_per_window {
                        return Poll::Ready(Some(Err(BodyTimeout::TooSlow.into())));
                    }
                    this.window_started = now;
                    this.window_bytes = 0;
                }
                if let Some((idle, deadline)) = &mut this.idle {
                    deadline.as_mut().reset(now + *idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let stalled = this
                    .idle
                    .as_mut()
                    .is_some_and(|(_, deadline)| deadline.as_mut().poll(cx).is_ready());
                if stalled {
                    Poll::Ready(Some(Err(BodyTimeout::Idle.into())))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

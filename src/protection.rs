//! Server-side overload protection that no tower or tonic layer provides in
//! the shape a gRPC service needs:
//!
//! - `ShedLayer`: a concurrency limit shared by every connection. A call
//!   beyond it is refused at once with UNAVAILABLE (retryable) and a
//!   `grpc-retry-pushback-ms` hint, and counted; it never waits in a queue.
//!   Health checks are never refused: an overloaded server must still tell
//!   its load balancer how it is.
//! - `limit_connections`: a bound on open client connections; one over the
//!   bound is closed as soon as it is accepted.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Gauge, counter, gauge};
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::{
    Status,
    metadata::MetadataValue,
    transport::server::{Connected, TcpConnectInfo},
};
use tower::{Layer, Service};

use crate::telemetry::names;

/// Paths that are never shed.
const NEVER_SHED_PREFIX: &str = "/grpc.health.v1.Health/";

/// The global concurrency limit; see the module docs.
#[derive(Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    pushback_ms: String,
    shed: Counter,
}

impl ShedLayer {
    pub fn new(max_concurrent_calls: usize, pushback: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(
                max_concurrent_calls.min(Semaphore::MAX_PERMITS),
            )),
            pushback_ms: pushback.as_millis().to_string(),
            shed: counter!(names::SHED, "reason" => "concurrency_limit"),
        }
    }

    fn refusal(&self) -> Response<tonic::body::Body> {
        let mut status = Status::unavailable("server overloaded: retry later");
        if let Ok(pushback) = MetadataValue::try_from(self.pushback_ms.as_str()) {
            status
                .metadata_mut()
                .insert("grpc-retry-pushback-ms", pushback);
        }
        status.into_http()
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

impl<S, B> Service<Request<tonic::body::Body>> for Shed<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>>,
    B: Body<Data = Bytes>,
{
    type Response = Response<ShedBody<B>>;
    type Error = S::Error;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let permit = if request.uri().path().starts_with(NEVER_SHED_PREFIX) {
            None
        } else {
            match self.layer.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    self.layer.shed.increment(1);
                    return ShedFuture::Refused {
                        response: Some(self.layer.refusal()),
                    };
                }
            }
        };
        ShedFuture::Admitted {
            inner: self.inner.call(request),
            permit,
        }
    }
}

pin_project! {
    #[project = ShedFutureProjection]
    pub enum ShedFuture<F> {
        Admitted { #[pin] inner: F, permit: Option<OwnedSemaphorePermit> },
        Refused { response: Option<Response<tonic::body::Body>> },
    }
}

impl<F, B, E> Future for ShedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ShedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedFutureProjection::Admitted { inner, permit } => inner.poll(cx).map(|result| {
                result.map(|response| {
                    // The permit is held until the response's last byte: a
                    // stream counts against the limit for its whole life.
                    let permit = permit.take();
                    response.map(|inner| ShedBody::Admitted {
                        inner,
                        _permit: permit,
                    })
                })
            }),
            ShedFutureProjection::Refused { response } => {
                let response = response.take().expect("polled after completion");
                Poll::Ready(Ok(response.map(|inner| ShedBody::Refused { inner })))
            }
        }
    }
}

pin_project! {
    #[project = ShedBodyProjection]
    pub enum ShedBody<B> {
        Admitted { #[pin] inner: B, _permit: Option<OwnedSemaphorePermit> },
        Refused { #[pin] inner: tonic::body::Body },
    }
}

impl<B> Body for ShedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ShedBodyProjection::Admitted { inner, .. } => inner.poll_frame(cx).map_err(Into::into),
            ShedBodyProjection::Refused { inner } => inner.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Admitted { inner, .. } => inner.is_end_stream(),
            Self::Refused { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Admitted { inner, .. } => inner.size_hint(),
            Self::Refused { inner } => inner.size_hint(),
        }
    }
}

/// A connection that holds one of the `--max-connections` slots while open.
pub struct LimitedConnection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for LimitedConnection {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// Accepted connections, at most `max` open at once; one more is closed as
/// soon as it is accepted, and counted.
pub fn limit_connections<S>(
    incoming: S,
    max: usize,
) -> impl Stream<Item = io::Result<LimitedConnection>> + Send + 'static
where
    S: Stream<Item = io::Result<TcpStream>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)));
    let refused = counter!(names::CONNECTIONS_REFUSED);
    let open = gauge!(names::CONNECTIONS_OPEN);
    incoming.filter_map(move |accepted| {
        let connection = match accepted {
            Ok(stream) => match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    open.increment(1.0);
                    Some(Ok(LimitedConnection {
                        stream,
                        _permit: permit,
                        open: open.clone(),
                    }))
                }
                Err(_) => {
                    refused.increment(1);
                    None
                }
            },
            Err(error) => Some(Err(error)),
        };
        std::future::ready(connection)
    })
}

impl Connected for LimitedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

//! The request and response bodies: gRPC messages counted from the framing,
//! time blocked on a slow reader, and the call finished at its trailers.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use metrics::Counter;
use pin_project_lite::pin_project;
use tonic::Code;

use super::{call::Call, framing::FrameCounter};
use crate::status::grpc_status;

pin_project! {
    /// The response body: counts messages, measures time blocked on the
    /// reader, and finishes the call at its trailers.
    pub struct TelemetryBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
        // When the last data frame was handed to hyper: hyper polls again
        // once the client's flow-control window has room, so the gap is time
        // spent blocked on the reader.
        last_sent_at: Option<Instant>,
    }
}

impl<B> TelemetryBody<B> {
    /// The body of `call`'s response; `None` for a call already finished (a
    /// trailers-only answer).
    pub(super) fn new(inner: B, call: Option<Call>) -> Self {
        Self {
            inner,
            call,
            last_sent_at: None,
        }
    }
}

impl<B> Body for TelemetryBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(call) = this.call.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        if let Some(sent_at) = this.last_sent_at.take() {
            call.blocked += sent_at.elapsed();
        }
        let inner = this.inner;
        let Call {
            label,
            recording,
            dispatch,
            ..
        } = call;
        let recording = &*recording;
        let frame = ready!(label.polling(
            || super::call::trace_ids(recording),
            || super::call::scoped(dispatch.as_ref(), || match recording {
                Some(recording) =>
                    crate::traces::calls::polling(recording, || inner.poll_frame(cx)),
                None => inner.poll_frame(cx),
            })
        ));
        let code = match &frame {
            Some(Ok(frame)) => match (frame.data_ref(), frame.trailers_ref()) {
                (Some(data), _) => {
                    call.on_data(data);
                    // Only streams record time blocked on the reader: a
                    // unary call reads no clock for it.
                    if call.method.streams.is_some() {
                        *this.last_sent_at = Some(Instant::now());
                    }
                    None
                }
                (None, Some(trailers)) => Some(grpc_status(trailers).unwrap_or(Code::Unknown)),
                (None, None) => None,
            },
            Some(Err(_)) => Some(Code::Internal),
            None => Some(Code::Unknown),
        };
        if let Some(code) = code {
            call.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body, counting the messages the client sends.
pub(super) fn count_received(body: tonic::body::Body, received: Counter) -> tonic::body::Body {
    let mut frames = FrameCounter::default();
    tonic::body::Body::new(body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            received.increment(frames.count(data));
        }
        frame
    }))
}

//! The request and response bodies: gRPC messages counted from the framing,
//! time blocked on a slow reader, and the call finished at its trailers.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Instant,
};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use metrics::Counter;
use pin_project_lite::pin_project;
use tonic::Code;
use tracing::Span;

use super::{call::Call, codes::grpc_status};

pin_project! {
    /// The response body: counts messages, measures time blocked on the
    /// reader, and finishes the call at its trailers.
    pub struct TelemetryBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
        span: Span,
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
        let span = call
            .as_ref()
            .map(|call| call.span.clone())
            .unwrap_or_else(Span::none);
        Self {
            inner,
            call,
            span,
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
        let span = &*this.span;
        let Call {
            label,
            span: call_span,
            sampled,
            recording,
            dispatch,
            ..
        } = call;
        let frame = ready!(label.polling(
            || super::call::trace_ids(call_span, *sampled),
            || tracing::dispatcher::with_default(dispatch, || match recording {
                Some(recording) => super::kept::polling(recording, || inner.poll_frame(cx)),
                None => span.in_scope(|| inner.poll_frame(cx)),
            })
        ));
        let code = match &frame {
            Some(Ok(frame)) => match (frame.data_ref(), frame.trailers_ref()) {
                (Some(data), _) => {
                    call.on_data(data);
                    *this.last_sent_at = Some(Instant::now());
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
            *this.span = Span::none();
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

pin_project! {
    /// The request body, counting the messages the client sends.
    pub(super) struct MessageCountingBody<B> {
        #[pin]
        inner: B,
        frames: FrameCounter,
        received: Counter,
    }
}

impl<B> MessageCountingBody<B> {
    pub(super) fn new(inner: B, received: Counter) -> Self {
        Self {
            inner,
            frames: FrameCounter::default(),
            received,
        }
    }
}

impl<B> Body for MessageCountingBody<B>
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
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let messages = this.frames.count(data);
            this.received.increment(messages);
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

/// Counts gRPC messages in a byte stream cut anywhere: each message is a
/// 5-byte prefix (compression flag, big-endian length) and its payload.
#[derive(Debug, Default)]
pub(super) struct FrameCounter {
    /// Prefix bytes seen of the message being started.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Payload bytes still to skip.
    remaining: u64,
}

impl FrameCounter {
    /// Messages started in `data`.
    pub(super) fn count(&mut self, data: &Bytes) -> u64 {
        let mut data = data.clone();
        let mut messages = 0;
        while data.has_remaining() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.remaining() as u64);
                data.advance(skip as usize);
                self.remaining -= skip;
                continue;
            }
            let take = (5 - self.prefix_len).min(data.remaining());
            data.copy_to_slice(&mut self.prefix[self.prefix_len..self.prefix_len + take]);
            self.prefix_len += take;
            if self.prefix_len == 5 {
                messages += 1;
                self.remaining = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
                self.prefix_len = 0;
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend((payload.len() as u32).to_be_bytes());
        bytes.extend(payload);
        bytes
    }

    #[test]
    fn frame_counter_counts_messages_cut_anywhere() {
        let stream: Vec<u8> = [message(b"hello"), message(b""), message(&[7; 300])].concat();
        for cut in 0..stream.len() {
            let mut counter = FrameCounter::default();
            let (a, b) = stream.split_at(cut);
            let total = counter.count(&Bytes::copy_from_slice(a))
                + counter.count(&Bytes::copy_from_slice(b));
            assert_eq!(total, 3, "cut at {cut}");
        }
    }
}

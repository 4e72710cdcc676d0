//! `CoalescedWrites`: what HTTP/2 writes in one round leaves in one system
//! call.
//!
//! h2 (0.4) collects a connection's frames in a buffer and writes it at the
//! end of each round of the connection's work. A DATA payload of 256 bytes
//! or more on a socket with vectored writes is not copied into that buffer:
//! it is written beside it, and every frame after it waits for that write.
//! A GetProduct answer (about 330 bytes) so costs two `writev`s: HEADERS and
//! DATA, then its trailers. Told that the socket has no vectored writes, h2
//! copies payloads under 1 KiB instead, and a round's answers leave in one
//! write; but then it hands a larger payload's frame header (and the frames
//! before it) and the payload over as two writes. `CoalescedWrites` holds a
//! write of up to `HOLD_UP_TO` bytes back and sends it with the next write,
//! or at the flush that ends h2's round: one system call a round for small
//! answers, one a DATA frame for streams, as before.
//!
//! The cost: a copy of each held write, and a buffer of at most
//! `HOLD_UP_TO` bytes per connection. Every write is a `writev`, as h2's
//! own are, so `/proc/PID/io`'s `syscw` (which does not count `send`)
//! counts them all.
//!
//! Imports nothing of the crate.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The longest write held back. h2's writes before a large payload are its
/// buffered frames and the payload's 9-byte header: a few answers' worth.
pub const HOLD_UP_TO: usize = 2048;

/// A stream whose short writes wait for the next write or the flush.
#[derive(Debug)]
pub struct CoalescedWrites<S> {
    inner: S,
    /// Written, as far as the caller knows, and not yet sent: at most
    /// `HOLD_UP_TO` bytes.
    held: Vec<u8>,
}

impl<S> CoalescedWrites<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            held: Vec::new(),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> CoalescedWrites<S> {
    /// Sends the held bytes, then as much of `data` as the socket takes, in
    /// one `writev` (more only when the held bytes went out in part); ready
    /// with how many of `data`'s bytes were sent.
    fn poll_send(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let slices = [IoSlice::new(&self.held), IoSlice::new(data)];
            let sent = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices))?;
            if sent == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let of_held = sent.min(self.held.len());
            self.held.drain(..of_held);
            if sent > of_held || (data.is_empty() && self.held.is_empty()) {
                return Poll::Ready(Ok(sent - of_held));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.held.len() + data.len() <= HOLD_UP_TO {
            // Grown to the longest round seen, never past the bound: an
            // idle connection keeps the few bytes of its handshake's.
            this.held.reserve_exact(data.len());
            this.held.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        this.poll_send(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.held.is_empty() {
            ready!(this.poll_send(cx, &[]))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    /// `false`: what makes h2 copy payloads under 1 KiB into its buffer.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CoalescedWrites<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: Connected> Connected for CoalescedWrites<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A socket that records each write call and takes at most `take`
    /// bytes a call.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<Vec<u8>>,
        take: Option<usize>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(data)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            slices: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let mut call: Vec<u8> = slices
                .iter()
                .flat_map(|slice| slice.iter().copied())
                .collect();
            call.truncate(this.take.unwrap_or(usize::MAX));
            let sent = call.len();
            this.calls.push(call);
            Poll::Ready(Ok(sent))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn sent(writes: &CoalescedWrites<Recorder>) -> Vec<u8> {
        writes.inner.calls.concat()
    }

    #[tokio::test]
    async fn short_writes_leave_together_at_the_flush() {
        let mut writes = CoalescedWrites::new(Recorder::default());
        writes.write_all(b"HEADERS").await.unwrap();
        writes.write_all(b"DATA").await.unwrap();
        writes.write_all(b"TRAILERS").await.unwrap();
        assert!(
            writes.inner.calls.is_empty(),
            "nothing is sent before the flush"
        );
        writes.flush().await.unwrap();
        assert_eq!(writes.inner.calls, [b"HEADERSDATATRAILERS".to_vec()]);
    }

    #[tokio::test]
    async fn a_header_leaves_with_the_long_payload_after_it_in_one_call() {
        let mut writes = CoalescedWrites::new(Recorder::default());
        let payload = vec![7; 16 * 1024];
        writes.write_all(b"frame header").await.unwrap();
        writes.write_all(&payload).await.unwrap();
        writes.flush().await.unwrap();
        assert_eq!(writes.inner.calls.len(), 1);
        assert_eq!(
            sent(&writes),
            [b"frame header".as_slice(), &payload].concat()
        );
    }

    #[tokio::test]
    async fn a_socket_taking_a_few_bytes_at_a_time_gets_every_byte_in_order() {
        let mut writes = CoalescedWrites::new(Recorder {
            take: Some(5),
            ..Recorder::default()
        });
        let payload: Vec<u8> = (0..3000).map(|n| n as u8).collect();
        writes.write_all(b"head").await.unwrap();
        writes.write_all(&payload).await.unwrap();
        writes.write_all(b"tail").await.unwrap();
        writes.shutdown().await.unwrap();
        assert_eq!(
            sent(&writes),
            [b"head".as_slice(), &payload, b"tail"].concat()
        );
        assert!(writes.held.is_empty());
    }

    #[tokio::test]
    async fn the_buffer_is_as_long_as_the_longest_round_held() {
        let mut writes = CoalescedWrites::new(Recorder::default());
        writes.write_all(&[0; 40]).await.unwrap();
        writes.flush().await.unwrap();
        assert_eq!(writes.held.capacity(), 40);
        writes.write_all(&[0; 300]).await.unwrap();
        writes.write_all(&[0; 30]).await.unwrap();
        writes.flush().await.unwrap();
        assert_eq!(writes.held.capacity(), 330);
    }

    #[tokio::test]
    async fn no_more_than_the_bound_is_held() {
        let mut writes = CoalescedWrites::new(Recorder::default());
        writes.write_all(&[1; HOLD_UP_TO]).await.unwrap();
        assert!(writes.inner.calls.is_empty());
        writes.write_all(&[2]).await.unwrap();
        assert_eq!(
            writes.inner.calls.len(),
            1,
            "the full buffer left with the next write"
        );
        assert!(writes.held.is_empty());
        assert_eq!(writes.held.capacity(), HOLD_UP_TO);
    }
}

//! gRPC's length-prefixed framing, read from the bytes a body carries.

use bytes::Bytes;

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
    /// Messages started in `data`. Reads the bytes in place: cloning a
    /// `Bytes` to consume it can allocate (a buffer made from a `Vec` is
    /// shared on its first clone).
    pub(super) fn count(&mut self, data: &Bytes) -> u64 {
        let mut data: &[u8] = data;
        let mut messages = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len() as u64) as usize;
                data = &data[skip..];
                self.remaining -= skip as u64;
                continue;
            }
            let take = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            data = &data[take..];
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

//! The catalogue's gRPC codec: prost's, except that a message which does
//! not decode is INVALID_ARGUMENT naming what was wrong ("invalid string
//! value: data is not UTF-8 encoded"), not INTERNAL. A request whose
//! string field is not UTF-8 is the client's fault, and a client must not
//! retry it or page anyone for it. The generated client shares the codec,
//! so a reply that does not decode is INVALID_ARGUMENT to it as well.
//!
//! The buffer a call's answer is encoded in starts at tonic's 8 KiB only
//! for answers that are pages or streams; a single product, a few hundred
//! bytes, starts at [`BUFFER`] ([`Answered`]).

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

use super::proto;

/// How large the buffer a single product or a request is encoded in
/// starts. tonic's 8 KiB is above jemalloc's fast path (4 KiB), so it was a
/// slow allocation and free; and it was a third of the 25 KiB a fully
/// observed GetProduct allocated, so of what the heap profiler sampled.
pub const BUFFER: usize = 1024;

/// tonic's default buffer, for answers that are a page or a stream: a
/// smaller one would be grown, and copied, several times over.
const PAGE_BUFFER: usize = 8 * 1024;

/// How much of a stream's messages tonic gathers into one write: its
/// default, which `BufferSettings` does not expose.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// How large the buffer of the answer to a message starts: [`BUFFER`]
/// unless the answer is a page or a stream. In a client's codec the
/// message is the reply it decodes and what it encodes is a request, so
/// the replies take the small buffer.
pub trait Answered {
    const ANSWER_BUFFER: usize = BUFFER;
}

impl Answered for proto::GetProductRequest {}
impl Answered for proto::ListProductsRequest {
    const ANSWER_BUFFER: usize = PAGE_BUFFER;
}
impl Answered for proto::SearchRequest {
    const ANSWER_BUFFER: usize = PAGE_BUFFER;
}
impl Answered for proto::Product {}
impl Answered for proto::SearchResponse {}

/// `tonic_prost::ProstCodec` with `CatalogueDecoder`, and an encoding
/// buffer sized for the answer ([`Answered`]).
#[derive(Debug, Clone)]
pub struct CatalogueCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CatalogueCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for CatalogueCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Answered + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CatalogueDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(U::ANSWER_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        CatalogueDecoder(PhantomData)
    }
}

/// Decodes a `U`; a message that does not is INVALID_ARGUMENT. Its buffer
/// is tonic's default, 8 KiB: at 1 KiB, jemalloc's thread caches flushed
/// more often and a ListProducts call cost 1 % more (callgrind).
#[derive(Debug, Clone)]
pub struct CatalogueDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for CatalogueDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        U::decode(buf).map(Some).map_err(|error| {
            Status::invalid_argument(format!("the message does not decode: {error}"))
        })
    }
}

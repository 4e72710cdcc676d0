//! The catalogue's gRPC codec: prost's, except that a message which does
//! not decode is INVALID_ARGUMENT naming what was wrong ("invalid string
//! value: data is not UTF-8 encoded"), not INTERNAL. A request whose
//! string field is not UTF-8 is the client's fault, and a client must not
//! retry it or page anyone for it. The generated client shares the codec,
//! so a reply that does not decode is INVALID_ARGUMENT to it as well.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstEncoder};

/// `tonic_prost::ProstCodec` with `CatalogueDecoder`.
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
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CatalogueDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CatalogueDecoder(PhantomData)
    }
}

/// Decodes a `U`; a message that does not is INVALID_ARGUMENT.
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

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

//! The gRPC surface: the catalogue's generated protobuf types and the
//! `CatalogueService` handlers. Handlers parse the request into `domain` values, call the store
//! and encode the answer.

mod catalogue;
pub mod codec;

pub use catalogue::{
    CatalogueApi, NEXT_PAGE_TOKEN_TRAILER, STOCK_SOURCE_HEADER, next_page_trailer,
};

/// Code generated from `proto/catalogue/v1/catalogue.proto`.
pub mod proto {
    tonic::include_proto!("catalogue.v1");

    /// The encoded descriptors of the catalogue protos, for server reflection.
    pub(crate) const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("catalogue_descriptor");
}

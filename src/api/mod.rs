//! The gRPC surface: generated protobuf types (the catalogue's, and the
//! inventory upstream's, which `upstream` uses) and the `CatalogueService`
//! handlers. Handlers parse the request into `domain` values, call the store
//! and encode the answer.

mod catalogue;

pub use catalogue::{CatalogueApi, NEXT_PAGE_TOKEN_TRAILER, STOCK_SOURCE_HEADER};

/// Code generated from `proto/catalogue/v1/catalogue.proto`.
pub mod proto {
    tonic::include_proto!("catalogue.v1");

    /// The encoded descriptors of the catalogue protos, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("catalogue_descriptor");
}

/// Code generated from `proto/inventory/v1/inventory.proto`: the upstream
/// GetProduct asks for live stock.
pub mod inventory {
    tonic::include_proto!("inventory.v1");
}

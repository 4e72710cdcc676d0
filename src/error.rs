//! The one place where errors become gRPC statuses:
//!
//! | error | status | logged |
//! |---|---|---|
//! | invalid input (`domain`) | INVALID_ARGUMENT, naming the field | no |
//! | no such product | NOT_FOUND | no |
//! | no pooled connection (or search share) within `--db-acquire-timeout` | UNAVAILABLE "the database is busy" | WARN, with the cause |
//! | the database's state: refused, reset, killed backend, restarting, out of resources, statement timeout, busy or locked, read-only, catalogue missing | UNAVAILABLE "the database is unavailable" | WARN, with the cause |
//! | an injected fault | its code | no |
//! | anything else: a defect (a corrupt row, a statement refused) | INTERNAL "internal error" | ERROR, with the cause |
//!
//! UNAVAILABLE tells a client to retry, later or on another replica.

use tonic::{Code, Status};

use crate::{
    domain::{InvalidInput, ProductId},
    store::StoreError,
};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error("product {:?} not found", .0.as_str())]
    NotFound(ProductId),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A fault injected on purpose (`PUT /faults`).
    #[error("injected fault")]
    Injected(Code),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidInput(invalid) => Status::invalid_argument(invalid.to_string()),
            error @ Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::Store(store) if store.is_busy() => {
                tracing::warn!(error = %store, "store busy");
                Status::unavailable("the database is busy: retry later")
            }
            Error::Store(store) if store.is_transient() => {
                tracing::warn!(error = %store, "store unavailable");
                Status::unavailable("the database is unavailable: retry later")
            }
            Error::Store(store) => internal(&store),
            Error::Injected(code) => Status::new(code, "injected fault"),
        }
    }
}

/// An INTERNAL status with a generic message: the cause is logged once here,
/// inside the request's span (so with its trace id), and never sent to the
/// client.
pub fn internal(cause: &dyn std::error::Error) -> Status {
    tracing::error!(error = %cause, "internal error");
    Status::new(Code::Internal, "internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_with_no_connection_to_spare_is_unavailable_not_internal() {
        let busy = StoreError::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(Status::from(Error::from(busy)).code(), Code::Unavailable);
    }

    #[test]
    fn a_database_that_cannot_answer_is_unavailable_not_internal() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        for error in [
            StoreError::Database(refused),
            StoreError::Database(sqlx::Error::PoolClosed),
            StoreError::CatalogueMissing,
        ] {
            assert_eq!(Status::from(Error::from(error)).code(), Code::Unavailable);
        }
    }

    #[test]
    fn statuses_carry_readable_messages_and_never_internal_causes() {
        let status = Status::from(Error::from(InvalidInput::MissingProductId));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "product_id is required");

        let status = Status::from(Error::NotFound(ProductId::parse("prod-x").unwrap()));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "product \"prod-x\" not found");

        let secret = StoreError::UnsupportedUrl("postgres://user:secret@db".into());
        let status = Status::from(Error::from(secret));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}

//! gRPC status codes as each convention names them: go-grpc-prometheus
//! (`grpc_code`) and OpenTelemetry (`rpc.response.status_code`), and the
//! status a response carries. Shared by the call layer, the traces, the
//! faults and the load generator.

use http::HeaderMap;
use tonic::Code;

use crate::values::header;

/// gRPC status code names as go-grpc-prometheus writes them (`grpc_code`),
/// indexed by code.
pub(crate) const GO_CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The same codes as the OpenTelemetry conventions write them
/// (`rpc.response.status_code`).
pub(crate) const OTEL_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A status code's name as the OpenTelemetry conventions write it
/// (`NOT_FOUND`).
pub(crate) fn code_name(code: Code) -> &'static str {
    OTEL_CODE_NAMES[code_index(code)]
}

/// A code's index in the tables above (its number; 16 at most).
pub(crate) fn code_index(code: Code) -> usize {
    (code as usize).min(16)
}

/// The status a response carries in its headers (trailers-only) or
/// trailers.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    let value = header(headers, &GRPC_STATUS)?;
    let code: i32 = value.to_str().ok()?.parse().ok()?;
    Some(Code::from_i32(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_read_from_among_the_other_fields() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-message", "no product".parse().unwrap());
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(grpc_status(&headers), Some(Code::NotFound));
        headers.insert("grpc-status", "five".parse().unwrap());
        assert_eq!(grpc_status(&headers), None);
    }

    #[test]
    fn every_code_has_names() {
        assert_eq!(GO_CODE_NAMES[Code::NotFound as usize], "NotFound");
        assert_eq!(
            OTEL_CODE_NAMES[Code::Unauthenticated as usize],
            "UNAUTHENTICATED"
        );
    }
}

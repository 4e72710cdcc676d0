//! The span exporter: each batch the SDK's batch processor hands over,
//! written once as OTLP bytes (`otlp`) and sent to the collector's
//! `TraceService/Export` over gRPC, retried while the collector is
//! unavailable.
//!
//! It stands in for opentelemetry-otlp's exporter, whose conversion,
//! encoding and drop of each batch were most of what a traced call cost
//! (`otlp`), and keeps what that exporter did with its settings: the
//! endpoint, the headers, the timeout and gzip compression, each from its
//! standard `OTEL_EXPORTER_OTLP_*` variable (`telemetry::settings`); retries
//! of UNAVAILABLE and the other codes OTLP calls transient, with an
//! exponential backoff, within the timeout; a partial success logged.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use bytes::{BufMut as _, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, uri::PathAndQuery};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use tonic::{
    Code, Request, Status,
    client::Grpc,
    codec::{BufferSettings, Codec, CompressionEncoding, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::{Channel, Endpoint},
};

use tonic_prost::ProstDecoder;

use super::otlp::{self, EncodedResource};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Retries after the first attempt, and the backoff's first and longest
/// waits: opentelemetry-otlp's recommended policy.
const RETRIES: u32 = 3;
const FIRST_WAIT: Duration = Duration::from_millis(100);
const LONGEST_WAIT: Duration = Duration::from_millis(1600);

/// Where spans go and how.
#[derive(Debug, Clone)]
pub struct Collector {
    /// `http://host:port`; https needs TLS, which this build leaves out.
    pub endpoint: http::Uri,
    pub headers: OtlpHeaders,
    /// How long one export may take, its retries included.
    pub timeout: Duration,
    pub compression: Compression,
}

/// How a batch is compressed on the wire (`OTEL_EXPORTER_OTLP_COMPRESSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
}

/// Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`), e.g. a
/// hosted collector's key.
#[derive(Debug, Clone, Default)]
pub struct OtlpHeaders(HeaderMap);

impl OtlpHeaders {
    /// `name=value` pairs separated by commas, each value percent-decoded,
    /// as OpenTelemetry's SDKs read the variable. An error names the entry
    /// or the header, never a value: values are often secrets.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for entry in list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let Some((name, value)) = entry.split_once('=') else {
                return Err("an entry is not name=value".to_owned());
            };
            let name = name.trim();
            let name =
                HeaderName::try_from(name).map_err(|_| format!("{name:?} is not a header name"))?;
            let mut value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .ok()
                .and_then(|value| HeaderValue::try_from(value.as_ref()).ok())
                .ok_or_else(|| format!("the value of {name} is not a header value"))?;
            // Printed as `Sensitive` wherever the settings are debugged.
            value.set_sensitive(true);
            headers.append(name, value);
        }
        Ok(Self(headers))
    }
}

/// `OTEL_EXPORTER_OTLP_TIMEOUT`: whole milliseconds, more than none.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("the OTLP timeout must be at least 1 ms".to_owned()),
        Ok(millis) => Ok(Duration::from_millis(millis)),
        Err(_) => Err(format!("{text:?} is not a whole number of milliseconds")),
    }
}

/// A bad collector setting, named.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CollectorError(String);

/// Sends batches to one collector; the SDK's batch processor owns it and
/// calls it from its own thread.
#[derive(Debug)]
pub struct OtlpExporter {
    client: Grpc<Channel>,
    headers: MetadataMap,
    timeout: Duration,
    resource: EncodedResource,
    shut_down: AtomicBool,
}

impl OtlpExporter {
    /// Must run inside a Tokio runtime: the channel's connection lives
    /// there, made at the first export.
    pub fn new(collector: &Collector) -> Result<Self, CollectorError> {
        if collector.endpoint.scheme_str() != Some("http") {
            return Err(CollectorError(format!(
                "the OTLP endpoint {} is not http://: this build has no TLS",
                collector.endpoint
            )));
        }
        let channel = Endpoint::from(collector.endpoint.clone())
            .timeout(collector.timeout)
            .connect_lazy();
        let mut client = Grpc::new(channel);
        if collector.compression == Compression::Gzip {
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(Self {
            client,
            headers: MetadataMap::from_headers(collector.headers.0.clone()),
            timeout: collector.timeout,
            resource: EncodedResource::default(),
            shut_down: AtomicBool::new(false),
        })
    }

    async fn send(&self, body: Bytes) -> Result<(), Status> {
        let mut client = self.client.clone();
        client.ready().await.map_err(|error| {
            Status::unavailable(format!("the collector is not reachable: {error}"))
        })?;
        let mut request = Request::new(body);
        *request.metadata_mut() = self.headers.clone();
        let answer = client
            .unary(request, PathAndQuery::from_static(EXPORT), Prepared)
            .await?
            .into_inner();
        if let Some(partial) = answer.partial_success
            && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
        {
            tracing::warn!(
                rejected_spans = partial.rejected_spans,
                message = partial.error_message,
                "the collector took part of a batch of spans"
            );
        }
        Ok(())
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let body = Bytes::from(otlp::export_request(&self.resource, &batch));
        drop(batch);
        let started = Instant::now();
        let mut wait = FIRST_WAIT;
        let mut retries = 0;
        loop {
            let status = match self.send(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(status) => status,
            };
            let time_left = self.timeout.saturating_sub(started.elapsed());
            if retries == RETRIES || !transient(status.code()) || wait >= time_left {
                return Err(OTelSdkError::InternalFailure(format!(
                    "the collector did not take a batch of spans: {}: {}",
                    status.code(),
                    status.message()
                )));
            }
            sleep(wait).await;
            wait = (wait * 2).min(LONGEST_WAIT);
            retries += 1;
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

/// The codes OTLP says a client retries (RESOURCE_EXHAUSTED only with the
/// collector's retry information, which is not read here).
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// On the batch processor's own thread there is no runtime to wait in.
async fn sleep(wait: Duration) {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::sleep(wait).await;
    } else {
        std::thread::sleep(wait);
    }
}

/// A request already written as bytes; the answer decoded by tonic-prost.
struct Prepared;

impl Codec for Prepared {
    type Encode = Bytes;
    type Decode = ExportAnswer;
    type Encoder = Self;
    type Decoder = ProstDecoder<ExportAnswer>;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

impl Encoder for Prepared {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

/// `ExportTraceServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportAnswer {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

/// `ExportTracePartialSuccess`.
#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_spans: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_value_pairs_with_percent_decoded_values() {
        let headers = OtlpHeaders::parse(" api-key = a%2Cb%20c ,Tenant=blue,,").expect("valid");
        let value = |name| headers.0.get(name).and_then(|value| value.to_str().ok());
        assert_eq!(value("api-key"), Some("a,b c"));
        assert_eq!(value("tenant"), Some("blue"));
        assert!(OtlpHeaders::parse("").expect("none").0.is_empty());
        assert!(!format!("{headers:?}").contains("blue"), "{headers:?}");
    }

    /// A header's value is often a secret: an error names the header, not
    /// the value.
    #[test]
    fn a_bad_entry_is_named_and_its_value_is_not() {
        let error = |list| OtlpHeaders::parse(list).expect_err("not valid");
        assert_eq!(error("api-key"), "an entry is not name=value");
        assert_eq!(error("bad name=x"), "\"bad name\" is not a header name");
        let secret = error("api-key=s3cr%0Aet");
        assert_eq!(secret, "the value of api-key is not a header value");
        assert!(!error("api-key=%FF").contains("FF"));
    }

    #[test]
    fn the_timeout_is_whole_milliseconds_more_than_none() {
        assert_eq!(parse_timeout("2500"), Ok(Duration::from_millis(2500)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("10s").is_err());
    }

    #[tokio::test]
    async fn an_https_endpoint_is_refused_for_want_of_tls() {
        let collector = Collector {
            endpoint: "https://collector.example:4317".parse().expect("a URL"),
            headers: OtlpHeaders::default(),
            timeout: Duration::from_secs(1),
            compression: Compression::None,
        };
        let error = OtlpExporter::new(&collector).expect_err("no TLS");
        assert!(
            error.to_string().contains("https://collector.example:4317"),
            "{error}"
        );
    }
}

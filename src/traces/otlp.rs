//! A batch of finished spans written as the bytes of an OTLP
//! `ExportTraceServiceRequest`, straight from the SDK's `SpanData`.
//!
//! opentelemetry-otlp first converts the batch into opentelemetry-proto's
//! owned structs (every key and string value copied into a new `String`),
//! then prost encodes them, working out each nested message's length again
//! at every level above it, then drops them: about 23,000 of the 33,000
//! instructions a traced GetProduct costs (callgrind, docs/telemetry.md).
//! Here each field is written once, from borrowed data, into one buffer; a
//! nested message's length is written in front of it when it is known
//! (`message`), moving its bytes only when the length takes more than one
//! byte. The resource, the same in every batch, is written once.
//!
//! Field numbers are opentelemetry-proto's `trace.proto`, `common.proto`
//! and `resource.proto`; the unit tests decode what is written here with
//! opentelemetry-proto and compare it with its own conversion of the same
//! spans.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{
    Array, InstrumentationScope, Key, Value,
    trace::{SpanContext, SpanId, SpanKind, Status},
};
use opentelemetry_sdk::{Resource, trace::SpanData};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// `SpanFlags`: the context says whether its parent is remote, and it is.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// The `Resource` message every batch carries, written once.
#[derive(Debug, Clone, Default)]
pub struct EncodedResource {
    message: Vec<u8>,
    schema_url: Option<String>,
}

impl EncodedResource {
    pub fn new(resource: &Resource) -> Self {
        let mut message = Vec::new();
        for (key, value) in resource.iter() {
            key_value(&mut message, 1, key, value);
        }
        Self {
            message,
            schema_url: resource.schema_url().map(str::to_owned),
        }
    }
}

/// `ExportTraceServiceRequest { resource_spans: [one ResourceSpans] }`,
/// the spans grouped by instrumentation scope in the order each scope is
/// first seen.
pub fn export_request(resource: &EncodedResource, spans: &[SpanData]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256 + spans.len() * 384);
    message(&mut buf, 1, |buf| {
        bytes_field(buf, 1, &resource.message);
        for (scope, spans) in by_scope(spans) {
            message(buf, 2, |buf| {
                message(buf, 1, |buf| instrumentation_scope(buf, scope));
                for span in spans {
                    message(buf, 2, |buf| span_message(buf, span));
                }
                string(buf, 3, scope.schema_url().unwrap_or_default());
            });
        }
        string(buf, 3, resource.schema_url.as_deref().unwrap_or_default());
    });
    buf
}

/// The spans of each scope, in the order the scopes are first seen; each
/// span's scope compared with the previous span's first (a batch is mostly
/// one tracer's).
fn by_scope(spans: &[SpanData]) -> Vec<(&InstrumentationScope, Vec<&SpanData>)> {
    let mut groups: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
    let mut last = 0;
    for span in spans {
        let scope = &span.instrumentation_scope;
        if groups.get(last).is_none_or(|(seen, _)| *seen != scope) {
            last = match groups.iter().position(|(seen, _)| *seen == scope) {
                Some(index) => index,
                None => {
                    groups.push((scope, Vec::with_capacity(spans.len())));
                    groups.len() - 1
                }
            };
        }
        groups[last].1.push(span);
    }
    groups
}

fn instrumentation_scope(buf: &mut Vec<u8>, scope: &InstrumentationScope) {
    string(buf, 1, scope.name());
    string(buf, 2, scope.version().unwrap_or_default());
    for attribute in scope.attributes() {
        key_value(buf, 3, &attribute.key, &attribute.value);
    }
}

fn span_message(buf: &mut Vec<u8>, span: &SpanData) {
    ids(buf, &span.span_context);
    if span.parent_span_id != SpanId::INVALID {
        bytes_field(buf, 4, &span.parent_span_id.to_bytes());
    }
    string(buf, 5, &span.name);
    uint(buf, 6, span_kind(&span.span_kind));
    fixed64(buf, 7, nanos(span.start_time));
    fixed64(buf, 8, nanos(span.end_time));
    for attribute in &span.attributes {
        key_value(buf, 9, &attribute.key, &attribute.value);
    }
    uint(buf, 10, span.dropped_attributes_count.into());
    for event in span.events.iter() {
        message(buf, 11, |buf| {
            fixed64(buf, 1, nanos(event.timestamp));
            string(buf, 2, &event.name);
            for attribute in &event.attributes {
                key_value(buf, 3, &attribute.key, &attribute.value);
            }
            uint(buf, 4, event.dropped_attributes_count.into());
        });
    }
    uint(buf, 12, span.events.dropped_count.into());
    for link in span.links.iter() {
        message(buf, 13, |buf| {
            ids(buf, &link.span_context);
            for attribute in &link.attributes {
                key_value(buf, 4, &attribute.key, &attribute.value);
            }
            uint(buf, 5, link.dropped_attributes_count.into());
            fixed32(
                buf,
                6,
                flags(&link.span_context, link.span_context.is_remote()),
            );
        });
    }
    uint(buf, 14, span.links.dropped_count.into());
    // Always there, as opentelemetry-otlp sends it, even when unset.
    message(buf, 15, |buf| {
        if let Status::Error { description } = &span.status {
            string(buf, 2, description);
        }
        uint(buf, 3, status_code(&span.status));
    });
    fixed32(
        buf,
        16,
        flags(&span.span_context, span.parent_span_is_remote),
    );
}

/// A span's or a link's `trace_id`, `span_id` and `trace_state` (fields 1
/// to 3 in both).
fn ids(buf: &mut Vec<u8>, context: &SpanContext) {
    bytes_field(buf, 1, &context.trace_id().to_bytes());
    bytes_field(buf, 2, &context.span_id().to_bytes());
    string(buf, 3, &context.trace_state().header());
}

fn flags(context: &SpanContext, remote: bool) -> u32 {
    let remote = if remote { IS_REMOTE } else { 0 };
    u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE | remote
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn status_code(status: &Status) -> u64 {
    match status {
        Status::Unset => 0,
        Status::Ok => 1,
        Status::Error { .. } => 2,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// `KeyValue { key, value: AnyValue }`.
fn key_value(buf: &mut Vec<u8>, field: u32, key: &Key, value: &Value) {
    message(buf, field, |buf| {
        string(buf, 1, key.as_str());
        message(buf, 2, |buf| any_value(buf, value));
    });
}

/// The `AnyValue` oneof: written even when it holds a default value, which
/// a plain field would leave out.
fn any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => always_string(buf, 1, text.as_str()),
        Value::Bool(flag) => always_uint(buf, 2, u64::from(*flag)),
        Value::I64(number) => always_uint(buf, 3, *number as u64),
        Value::F64(number) => always_fixed64(buf, 4, number.to_bits()),
        Value::Array(array) => message(buf, 5, |buf| match array {
            Array::Bool(values) => {
                for flag in values {
                    message(buf, 1, |buf| always_uint(buf, 2, u64::from(*flag)));
                }
            }
            Array::I64(values) => {
                for number in values {
                    message(buf, 1, |buf| always_uint(buf, 3, *number as u64));
                }
            }
            Array::F64(values) => {
                for number in values {
                    message(buf, 1, |buf| always_fixed64(buf, 4, number.to_bits()));
                }
            }
            Array::String(values) => {
                for text in values {
                    message(buf, 1, |buf| always_string(buf, 1, text.as_str()));
                }
            }
            // `Array` is non-exhaustive: a kind added later is sent as
            // its text rather than lost.
            other => message(buf, 1, |buf| always_string(buf, 1, &other.to_string())),
        }),
        // Likewise for `Value`.
        other => always_string(buf, 1, &other.as_str()),
    }
}

/// A nested message: its key, its length, then what `body` writes. One
/// byte is kept for the length; a longer one moves the body along.
fn message(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(field, WireType::LengthDelimited, buf);
    let start = buf.len();
    buf.push(0);
    body(buf);
    let length = buf.len() - start - 1;
    let width = encoded_len_varint(length as u64);
    if width > 1 {
        buf.resize(buf.len() + width - 1, 0);
        buf.copy_within(start + 1..start + 1 + length, start + width);
    }
    let mut slot = &mut buf[start..start + width];
    encode_varint(length as u64, &mut slot);
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        always_bytes(buf, field, bytes);
    }
}

fn always_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    encode_key(field, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

fn string(buf: &mut Vec<u8>, field: u32, text: &str) {
    bytes_field(buf, field, text.as_bytes());
}

fn always_string(buf: &mut Vec<u8>, field: u32, text: &str) {
    always_bytes(buf, field, text.as_bytes());
}

fn uint(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        always_uint(buf, field, value);
    }
}

fn always_uint(buf: &mut Vec<u8>, field: u32, value: u64) {
    encode_key(field, WireType::Varint, buf);
    encode_varint(value, buf);
}

fn fixed32(buf: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        encode_key(field, WireType::ThirtyTwoBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        always_fixed64(buf, field, value);
    }
}

fn always_fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    encode_key(field, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, time::Duration};

    use opentelemetry::{
        KeyValue, StringValue,
        trace::{Event, Link, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_proto::{
        tonic::collector::trace::v1::ExportTraceServiceRequest,
        transform::{
            common::tonic::ResourceAttributesWithSchema,
            trace::tonic::group_spans_by_resource_and_scope,
        },
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use super::*;

    fn context(trace: u128, span: u64, remote: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            TraceState::from_key_value([("vendor", "value")]).expect("a valid trace state"),
        )
    }

    fn every_kind_of_value() -> Vec<KeyValue> {
        vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("empty", ""),
            KeyValue::new("owned", String::from("x").repeat(200)),
            KeyValue::new("port", 4317_i64),
            KeyValue::new("negative", -1_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("false", false),
            KeyValue::new("true", true),
            KeyValue::new("ratio", 0.25),
            KeyValue::new("nothing", 0.0),
            KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("numbers", Value::Array(Array::I64(vec![0, -7, 1 << 40]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, 0.0]))),
            KeyValue::new(
                "texts",
                Value::Array(Array::String(vec![StringValue::from("a"), "".into()])),
            ),
        ]
    }

    fn span(name: &'static str, scope: &InstrumentationScope, kind: SpanKind) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789);
        SpanData {
            span_context: context(
                0x0af7651916cd43dd8448eb211c80319c,
                0xb7ad6b7169203331,
                false,
            ),
            parent_span_id: SpanId::from(0x00f067aa0ba902b7),
            parent_span_is_remote: true,
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: start + Duration::from_micros(180),
            attributes: every_kind_of_value(),
            dropped_attributes_count: 2,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        }
    }

    /// What opentelemetry-otlp would send for the same spans.
    fn libraries(resource: &Resource, spans: &[SpanData]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans.to_vec(),
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    fn ours(resource: &Resource, spans: &[SpanData]) -> ExportTraceServiceRequest {
        let bytes = export_request(&EncodedResource::new(resource), spans);
        ExportTraceServiceRequest::decode(bytes.as_slice()).expect("what is written decodes")
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_service_name("catalogue")
            .with_attribute(KeyValue::new("service.instance.id", "host/1"))
            .build()
    }

    #[test]
    fn a_batch_decodes_to_what_opentelemetry_otlp_would_have_sent() {
        let scope = InstrumentationScope::builder("catalogue").build();
        let mut server = span(
            "catalogue.v1.CatalogueService/GetProduct",
            &scope,
            SpanKind::Server,
        );
        server.status = Status::error("NOT_FOUND");
        server.parent_span_id = SpanId::INVALID;
        server.parent_span_is_remote = false;
        let mut store = span("SELECT products", &scope, SpanKind::Client);
        store.status = Status::Ok;
        store.events.events = vec![Event::new(
            "exception",
            UNIX_EPOCH,
            every_kind_of_value(),
            1,
        )];
        store.events.dropped_count = 3;
        store.links.links = vec![Link::new(
            context(7, 8, true),
            vec![KeyValue::new("kept", true)],
            4,
        )];
        store.links.dropped_count = 5;
        let spans = [server, store, span("internal", &scope, SpanKind::Internal)];

        let resource = resource();
        assert_eq!(ours(&resource, &spans), libraries(&resource, &spans));
    }

    /// Spans of two tracers are grouped by scope, each with its version,
    /// attributes and schema URL; a long batch needs lengths of several
    /// bytes at every level.
    #[test]
    fn spans_are_grouped_by_scope_and_long_batches_keep_their_lengths() {
        let first = InstrumentationScope::builder("catalogue")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.kind", "server")])
            .build();
        let second = InstrumentationScope::builder("other").build();
        let spans: Vec<SpanData> = (0..600)
            .map(|index| {
                let scope = if index % 3 == 0 { &second } else { &first };
                span("call", scope, SpanKind::Producer)
            })
            .collect();

        let resource = Resource::builder_empty()
            .with_schema_url(
                [KeyValue::new("service.name", "catalogue")],
                "https://example.com/s",
            )
            .build();
        let (ours, libraries) = (ours(&resource, &spans), libraries(&resource, &spans));
        assert_eq!(ours, libraries);
        let scopes: Vec<_> = ours.resource_spans[0]
            .scope_spans
            .iter()
            .map(|scope| {
                (
                    scope.scope.as_ref().map(|scope| scope.name.as_str()),
                    scope.spans.len(),
                )
            })
            .collect();
        assert_eq!(scopes, [(Some("other"), 200), (Some("catalogue"), 400)]);
    }

    #[test]
    fn an_empty_batch_is_the_resource_alone() {
        let resource = resource();
        assert_eq!(ours(&resource, &[]), libraries(&resource, &[]));
    }

    #[test]
    fn a_length_of_several_bytes_moves_the_body_along() {
        for size in [0, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let mut buf = vec![9];
            message(&mut buf, 2, |buf| buf.extend(std::iter::repeat_n(7, size)));
            let mut rest = &buf[1..];
            let key = prost::encoding::decode_varint(&mut rest).expect("a key");
            assert_eq!(key, (2 << 3) | 2);
            let length = prost::encoding::decode_varint(&mut rest).expect("a length");
            assert_eq!(length as usize, size);
            assert_eq!(rest, vec![7; size].as_slice());
        }
    }
}

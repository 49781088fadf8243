//! OpenTelemetry traces of the real `depot dev` binary: with `OTEL_EXPORTER_OTLP_ENDPOINT` set,
//! the request spans (with their request_id) reach an OTLP/HTTP receiver as protobuf, in batches
//! and once more when the node stops; without it, with `OTEL_SDK_DISABLED=true` or with an
//! endpoint that is not a URL, nothing goes out and the node serves as usual. A request with a
//! W3C `traceparent` continues the caller's trace.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use depot_tests::process::dev_command;
use depot_tests::receiver::{Behaviour, Receiver, Recorded};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::e2e::{depot, eventually, send, Server, ADMIN_PASSWORD};

const WITHIN: Duration = Duration::from_secs(60);

/// `depot dev` with exactly these OTEL_* variables (none inherited from the test's environment)
/// and info-level spans.
fn start_with_otel(data_dir: &Path, otel: &[(&str, &str)]) -> Server {
    let mut command = dev_command(depot(), &[], data_dir, ADMIN_PASSWORD);
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command.stderr(Stdio::null()).env("DEPOT_LOG", "info").envs(otel.iter().copied());
    Server::start_dev(command, WITHIN).unwrap_or_else(|e| panic!("{e}"))
}

/// `depot dev` exporting to `receiver` in batches every 100 ms.
fn start_exporting_to(receiver: &Receiver, data_dir: &Path) -> Server {
    let endpoint = format!("http://{}", receiver.addr());
    start_with_otel(data_dir, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100")])
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

/// The `request` spans of the OTLP exports received so far whose request_id is `id`, with the
/// service name of their resource.
fn request_spans(requests: &[Recorded], id: &str) -> Vec<String> {
    exported_request_spans(requests, id).into_iter().map(|(service, _)| service).collect()
}

/// Like [`request_spans`], with each span.
fn exported_request_spans(requests: &[Recorded], id: &str) -> Vec<(String, Span)> {
    let mut found = Vec::new();
    for r in requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/traces"), "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"), "{r:?}");
        let export = ExportTraceServiceRequest::decode(r.body.as_slice()).unwrap();
        for resource_spans in &export.resource_spans {
            let attributes = resource_spans.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let service = string_attribute(attributes, "service.name").unwrap_or_default().to_owned();
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                if span.name == "request" && string_attribute(&span.attributes, "request_id") == Some(id) {
                    assert_eq!(span.trace_id.len(), 16, "{span:?}");
                    found.push((service.clone(), span.clone()));
                }
            }
        }
    }
    found
}

fn get_with_request_id(server: &Server, id: &str) {
    let r = send(server.addr, Some(&server.token), "GET", "/v1/stations", &[("x-request-id", id)], b"");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn request_spans_are_exported_over_otlp_http_when_an_endpoint_is_set() {
    let receiver = Receiver::start(Behaviour::Status(200));
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_exporting_to(&receiver, &dir.path().join("data"));
    get_with_request_id(&server, "otel-batch-1");
    let services = eventually(WITHIN, "the request span at the OTLP receiver", || {
        let found = request_spans(&receiver.requests(), "otel-batch-1");
        (!found.is_empty()).then_some(found)
    });
    assert_eq!(services, ["depot"], "OTEL_SERVICE_NAME unset: the service is depot");
    server.terminate();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_request_with_a_w3c_traceparent_continues_the_callers_trace() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
    let receiver = Receiver::start(Behaviour::Status(200));
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_exporting_to(&receiver, &dir.path().join("data"));
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let headers = [("x-request-id", "otel-continued"), ("traceparent", traceparent.as_str())];
    let r = send(server.addr, Some(&server.token), "GET", "/v1/stations", &headers, b"");
    assert_eq!(r.status, 200, "{r:?}");
    get_with_request_id(&server, "otel-fresh");
    let spans = eventually(WITHIN, "both request spans at the OTLP receiver", || {
        let requests = receiver.requests();
        let continued = exported_request_spans(&requests, "otel-continued");
        let fresh = exported_request_spans(&requests, "otel-fresh");
        (!continued.is_empty() && !fresh.is_empty()).then(|| (continued[0].1.clone(), fresh[0].1.clone()))
    });
    server.terminate();
    let (continued, fresh) = spans;
    assert_eq!(hex(&continued.trace_id), TRACE_ID, "{continued:?}");
    assert_eq!(hex(&continued.parent_span_id), PARENT_SPAN_ID, "{continued:?}");
    assert_ne!(hex(&continued.span_id), PARENT_SPAN_ID, "the gateway's span is a new child");
    // Without the header the request is the root of a trace of its own.
    assert_ne!(hex(&fresh.trace_id), TRACE_ID, "{fresh:?}");
    assert!(fresh.parent_span_id.is_empty(), "{fresh:?}");
}

#[test]
fn spans_still_buffered_are_sent_when_the_node_stops_and_the_service_name_is_honoured() {
    let receiver = Receiver::start(Behaviour::Status(200));
    let endpoint = format!("http://{}/v1/traces", receiver.addr());
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_with_otel(
        &dir.path().join("data"),
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "depot-east"),
            // Longer than the test: only the flush at exit can send the span.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    get_with_request_id(&server, "otel-at-exit");
    server.terminate();
    assert_eq!(request_spans(&receiver.requests(), "otel-at-exit"), ["depot-east"]);
}

#[test]
fn without_an_endpoint_or_with_the_sdk_disabled_nothing_is_exported() {
    let receiver = Receiver::start(Behaviour::Status(200));
    let endpoint = format!("http://{}", receiver.addr());
    let dir = tempfile::tempdir().unwrap();
    for (i, otel) in [
        vec![("OTEL_BSP_SCHEDULE_DELAY", "1"), ("OTEL_SERVICE_NAME", "depot")],
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_SDK_DISABLED", "true")],
        // Not a URL: traces stay off (with a warning) and the node serves.
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318")],
    ]
    .into_iter()
    .enumerate()
    {
        let mut server = start_with_otel(&dir.path().join(format!("data-{i}")), &otel);
        get_with_request_id(&server, "otel-off");
        let ready = server.json("GET", "/readyz", None);
        assert_eq!(ready.status, 200, "{ready:?}");
        // A running pipeline would send what it holds at exit, before the process ends.
        server.terminate();
        assert!(receiver.requests().is_empty(), "{otel:?}: {:?}", receiver.requests());
    }
}

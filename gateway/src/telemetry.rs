//! OpenTelemetry traces: off unless an OTLP endpoint is configured with the standard variables.
//!
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! (used as is) turns export on; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps
//! it off. Spans go out in batches over OTLP/HTTP with protobuf bodies from the SDK's own thread;
//! the SDK reads `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_EXPORTER_OTLP_*_{HEADERS,
//! TIMEOUT,COMPRESSION}` and `OTEL_RESOURCE_ATTRIBUTES`. The service name is `OTEL_SERVICE_NAME`,
//! else `depot`.
//!
//! A request that carries a W3C `traceparent` header (and `tracestate`) continues that trace: its
//! `request` span gets the caller's trace id and the caller's span as parent, so a trace started
//! in a client or a proxy runs on through the gateway ([`incoming_parent`]).

use std::time::Duration;

use actix_web::http::header::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;

/// The service name when the environment names none.
pub const DEFAULT_SERVICE_NAME: &str = "depot";

/// How long the exit waits for the last spans to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the environment asks for traces: an endpoint, and the SDK not disabled.
pub fn wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter = var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    !disabled && !no_exporter && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The endpoint settings that are set but not an http(s) URL (the exporter would quietly fall
/// back to `localhost:4318` for them).
pub fn bad_endpoints(var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .into_iter()
        .filter_map(|name| {
            let value = var(name).filter(|v| !v.trim().is_empty())?;
            let ok = url::Url::parse(value.trim())
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            (!ok).then(|| format!("{name}={value:?} is not an http:// or https:// URL"))
        })
        .collect()
}

/// Warnings about settings this build does not follow, for the log once it is installed.
pub fn warnings(var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(p) = var(name).filter(|p| p.trim() != "http/protobuf") {
            out.push(format!("{name}={p:?} is not supported; traces go out as http/protobuf"));
            break;
        }
    }
    if let Some(e) = var("OTEL_TRACES_EXPORTER").filter(|e| !matches!(e.trim(), "otlp" | "none" | "")) {
        out.push(format!("OTEL_TRACES_EXPORTER={e:?} is not supported; traces go out over OTLP"));
    }
    out
}

/// The request headers as the propagator reads them: values that are not visible ASCII are
/// treated as absent (a malformed `traceparent` starts a new trace).
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The caller's trace context from a valid W3C `traceparent` header (with its `tracestate`), to
/// parent the request span on; `None` without one or when it does not parse, and the request
/// starts a trace of its own. Whether the request is sampled follows the header's sampled flag
/// (the SDK's default sampler is parent-based).
pub fn incoming_parent(headers: &HeaderMap) -> Option<opentelemetry::Context> {
    if !headers.contains_key("traceparent") {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    context.span().span_context().is_valid().then_some(context)
}

/// The trace pipeline while it runs; [`Traces::shutdown`] sends what is still buffered.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Builds the pipeline when the process environment asks for it.
    pub fn from_env() -> Result<Option<Traces>, String> {
        let var = |name: &str| std::env::var(name).ok();
        if !wanted(var) {
            return Ok(None);
        }
        let bad = bad_endpoints(var);
        if !bad.is_empty() {
            return Err(bad.join("; "));
        }
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map_err(|e| format!("OpenTelemetry: cannot build the OTLP exporter: {e}"))?;
        let mut resource = Resource::builder();
        let named = var("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
            || var("OTEL_RESOURCE_ATTRIBUTES")
                .is_some_and(|v| v.split(',').any(|kv| kv.trim().starts_with("service.name=")));
        if !named {
            resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
        }
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
        Ok(Some(Traces { provider }))
    }

    pub fn tracer(&self) -> Tracer {
        self.provider.tracer("depot")
    }

    /// Exports the spans still buffered and stops the pipeline. Blocks (up to a few seconds):
    /// call it from a thread that may block.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(error = %e, "OpenTelemetry: the last spans may not have been exported");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn an_endpoint_turns_traces_on_and_the_standard_switches_off() {
        assert!(!wanted(env(&[])));
        assert!(!wanted(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(wanted(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])));
        assert!(wanted(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")])));
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(!wanted(env(&[on, ("OTEL_SDK_DISABLED", "TRUE")])));
        assert!(wanted(env(&[on, ("OTEL_SDK_DISABLED", "false")])));
        assert!(!wanted(env(&[on, ("OTEL_TRACES_EXPORTER", "none")])));
    }

    #[test]
    fn an_endpoint_that_is_not_an_http_url_is_refused() {
        assert!(bad_endpoints(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])).is_empty());
        assert!(bad_endpoints(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c.example/v1/traces")])).is_empty());
        for bad in ["127.0.0.1:4318", "grpc://c:4317", "http://", "not a url", "file:///tmp/x"] {
            assert_eq!(bad_endpoints(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)])).len(), 1, "{bad:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                actix_web::http::header::HeaderName::from_static(k),
                actix_web::http::header::HeaderValue::from_static(v),
            );
        }
        map
    }

    #[test]
    fn a_valid_traceparent_is_the_parent_and_anything_else_is_none() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = incoming_parent(&headers(&[("traceparent", parent), ("tracestate", "vendor=1")]));
        let span = context.as_ref().map(|c| c.span().span_context().clone());
        let span = span.expect("a valid traceparent");
        assert_eq!(span.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.is_remote() && span.is_sampled());
        assert_eq!(span.trace_state().header(), "vendor=1");
        assert!(incoming_parent(&headers(&[])).is_none());
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(incoming_parent(&headers(&[("traceparent", bad)])).is_none(), "{bad}");
        }
    }

    #[test]
    fn unsupported_settings_are_named() {
        assert!(warnings(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])).is_empty());
        let w = warnings(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_TRACES_EXPORTER", "zipkin")]));
        assert_eq!(w.len(), 2, "{w:?}");
    }
}

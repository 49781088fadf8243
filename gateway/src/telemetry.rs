//! OpenTelemetry traces: off unless an OTLP endpoint is configured with the standard variables.
//!
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! (used as is) turns export on; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps
//! it off. Spans go out in batches over OTLP/HTTP with protobuf bodies from the SDK's own thread;
//! the SDK reads `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_EXPORTER_OTLP_*_{HEADERS,
//! TIMEOUT,COMPRESSION}` and `OTEL_RESOURCE_ATTRIBUTES`. The service name is `OTEL_SERVICE_NAME`,
//! else `depot`.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
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

    #[test]
    fn unsupported_settings_are_named() {
        assert!(warnings(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])).is_empty());
        let w = warnings(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_TRACES_EXPORTER", "zipkin")]));
        assert_eq!(w.len(), 2, "{w:?}");
    }
}

//! [`OtlpTracing`]: LAX's spans exported to an OpenTelemetry collector over OTLP/gRPC
//! (feature `opentelemetry`).

use std::{fmt, time::Duration};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkError,
    trace::{SdkTracer, SdkTracerProvider},
};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// The `tracing` layer of an [`OtlpTracing`], over subscriber `S`.
pub type OtlpLayer<S> = OpenTelemetryLayer<S, SdkTracer>;

/// How long [`OtlpTracing::shutdown`] waits for the last spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the OTLP export could not be set up or shut down.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry export to {endpoint}: {message}")]
pub struct OtlpError {
    endpoint: String,
    message: String,
}

impl OtlpError {
    /// The collector endpoint in question.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// A tracer provider sending spans in batches to an OTLP/gRPC collector endpoint (e.g.
/// `http://otel-collector:4317`), and the `tracing` layer that feeds it.
///
/// Nothing is installed by making one: add [`layer`](Self::layer) to the application's
/// subscriber, and call [`shutdown`](Self::shutdown) before the process ends so the last
/// batch is sent. Spans carry `service.name` = the name given, unless `OTEL_SERVICE_NAME`
/// or `OTEL_RESOURCE_ATTRIBUTES` names the service; the standard `OTEL_BSP_*` variables tune
/// the batching and `OTEL_EXPORTER_OTLP_TIMEOUT` the export timeout.
///
/// Make it inside a Tokio runtime (the gRPC channel runs on it); exports happen on the batch
/// processor's own thread.
#[derive(Clone)]
pub struct OtlpTracing {
    endpoint: String,
    provider: SdkTracerProvider,
}

impl fmt::Debug for OtlpTracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpTracing")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl OtlpTracing {
    /// Export to `endpoint` (`http://` or `https://`, host and port of the collector's
    /// OTLP/gRPC receiver) as service `service_name`.
    ///
    /// # Errors
    ///
    /// [`OtlpError`] when the endpoint is not a usable URL.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn new(endpoint: &str, service_name: &str) -> Result<Self, OtlpError> {
        let error = |message: String| OtlpError {
            endpoint: endpoint.to_owned(),
            message,
        };
        Self::check_endpoint(endpoint)?;
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| error(e.to_string()))?;
        let mut resource = Resource::builder();
        if !names_the_service(
            std::env::var("OTEL_SERVICE_NAME").ok(),
            std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok(),
        ) {
            resource = resource.with_service_name(service_name.to_owned());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(OtlpTracing {
            endpoint: endpoint.to_owned(),
            provider,
        })
    }

    /// Checks that `endpoint` is an `http://` or `https://` URL with a host, as
    /// [`new`](Self::new) does (for validating a configuration before connecting).
    ///
    /// # Errors
    ///
    /// [`OtlpError`] saying what is wrong.
    pub fn check_endpoint(endpoint: &str) -> Result<(), OtlpError> {
        check_endpoint(endpoint).map_err(|message| OtlpError {
            endpoint: endpoint.to_owned(),
            message: message.to_owned(),
        })
    }

    /// The collector endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The tracer provider, for spans of the application's own.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// A `tracing` layer exporting spans through this provider; add it to the subscriber.
    pub fn layer<S>(&self) -> OtlpLayer<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("lax"))
    }

    /// Sends what is batched and stops the provider; spans ended later are dropped. Waits
    /// at most 5 s for the collector, off the async threads. Shutting down again does
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`OtlpError`] when the last batch could not be sent in time.
    pub async fn shutdown(&self) -> Result<(), OtlpError> {
        let provider = self.provider.clone();
        let shut =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        let message = match shut {
            Ok(Ok(()) | Err(OTelSdkError::AlreadyShutdown)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        Err(OtlpError {
            endpoint: self.endpoint.clone(),
            message,
        })
    }
}

/// Refuses what tonic would take but could never reach: no `http`/`https` scheme, no host.
fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or("the endpoint must start with http:// or https://")?;
    if rest.is_empty() || rest.starts_with(['/', ':']) {
        return Err("the endpoint has no host");
    }
    Ok(())
}

/// Whether the OpenTelemetry environment already names the service.
fn names_the_service(service_name: Option<String>, attributes: Option<String>) -> bool {
    service_name.is_some_and(|name| !name.trim().is_empty())
        || attributes.is_some_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim_start().starts_with("service.name="))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_need_a_scheme_and_a_host() {
        assert!(check_endpoint("http://collector:4317").is_ok());
        assert!(check_endpoint("https://collector").is_ok());
        assert!(check_endpoint("collector:4317").is_err());
        assert!(check_endpoint("grpc://collector:4317").is_err());
        assert!(check_endpoint("http://").is_err());
        assert!(check_endpoint("http://:4317").is_err());
    }

    #[test]
    fn the_environment_may_name_the_service() {
        assert!(!names_the_service(None, None));
        assert!(!names_the_service(Some(" ".into()), Some("team=a".into())));
        assert!(names_the_service(Some("orders".into()), None));
        assert!(names_the_service(
            None,
            Some("team=a, service.name=orders".into())
        ));
    }

    #[tokio::test]
    async fn a_bad_endpoint_is_refused_and_a_good_one_shuts_down_cleanly() {
        let refused = OtlpTracing::new("collector:4317", "lax-test").unwrap_err();
        assert_eq!(refused.endpoint(), "collector:4317");
        assert!(refused.to_string().contains("http://"), "{refused}");

        // Nothing was traced: shutting down sends nothing and succeeds, twice.
        let tracing = OtlpTracing::new("http://127.0.0.1:9", "lax-test").unwrap();
        tracing.shutdown().await.expect("first shutdown");
        tracing
            .shutdown()
            .await
            .expect("a second shutdown does nothing");
    }
}

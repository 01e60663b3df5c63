//! OpenTelemetry traces (feature `otlp`): a tracer provider exporting over OTLP/HTTP (protobuf) with the workspace's reqwest, the `tracing` layer that feeds it, and the engine's `TraceLink` over it.
//!
//! Spans end on the request's or the job's task and are handed to the SDK's batch
//! processor: a bounded queue (2048 spans unless `OTEL_BSP_MAX_QUEUE_SIZE` says
//! otherwise) drained by its own thread, which drops and counts what does not fit
//! (the count is logged at shutdown), so neither a request nor a deploy ever waits
//! on the collector. Each export is bounded by [`EXPORT_TIMEOUT`]; the SIGTERM drain
//! flushes what is queued within [`SHUTDOWN_FLUSH`]. A failed export is not retried
//! (the SDK's default would retry three times, sleeping on the batch thread while the
//! queue fills): its spans are dropped and the SDK logs why.
//!
//! Only spans and events of target [`TRACE_TARGET`] are exported: the trace spans of
//! deploy-server and deploy-engine, which the log output leaves out. Log events do
//! not become span events, so the log lines' details (operator names, error texts)
//! stay in the logs.

use std::time::Duration;

use anyhow::Context as _;
use deploy_engine::{TRACE_TARGET, TraceLink, Traceparent};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, TracerProviderBuilder,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

use crate::otlp_config::OtlpConfig;

/// Bound of one export request, connection included.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the SIGTERM drain waits for queued spans to be exported.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// The most of a collector's response body read (it says how many spans it refused).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The layer type the subscriber takes: boxed, so the log format's layer can follow it.
pub type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The running exporter; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Starts the exporter to `config`'s collector; its HTTP requests run on `runtime`.
/// Returns the handle and the `tracing` layer that turns deployd's spans (the
/// request, job, wave, task and executor spans of deploy-server and deploy-engine)
/// into OpenTelemetry spans.
pub fn start(
    config: &OtlpConfig,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<(Telemetry, BoxedLayer)> {
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .context("cannot build the OTLP HTTP client")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeClient { client, runtime })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.traces_url.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        // One attempt: a collector that is down is not waited for (see the module doc).
        .with_retry_policy(RetryPolicy::disabled())
        .build()
        .with_context(|| format!("cannot set up the OTLP exporter to {}", config.traces_url))?;
    // The SDK's batch processor: its own thread, a bounded queue, drops counted.
    let processor = BatchSpanProcessor::builder(exporter).build();
    let builder = SdkTracerProvider::builder().with_span_processor(processor);
    let provider = provider(builder, config);
    let layer = layer(&provider);
    Ok((Telemetry { provider }, layer))
}

/// The tracer provider over `builder`'s exporter: the sampler and `config`'s resource.
/// Every trace is recorded unless the caller's `traceparent` says its part was not
/// (sampled flag off); the frequent routes start no trace (deploy-server decides).
fn provider(builder: TracerProviderBuilder, config: &OtlpConfig) -> SdkTracerProvider {
    let mut attributes: Vec<KeyValue> = config
        .resource_attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    // `otlp_resource_attributes` may not set it (refused when read): always the build's.
    attributes.push(KeyValue::new(
        "service.version",
        env!("DEPLOY_BUILD_VERSION").to_owned(),
    ));
    let resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes(attributes)
        .build();
    builder
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build()
}

/// The `tracing` layer exporting through `provider`: spans and events of
/// [`TRACE_TARGET`] only. A dependency's spans (hyper, sqlx, the exporter's own client)
/// would be noise, and the exporter's would feed itself.
fn layer(provider: &SdkTracerProvider) -> BoxedLayer {
    let tracer = provider.tracer("deployd");
    let ours = Targets::new().with_target(TRACE_TARGET, tracing::Level::INFO);
    Box::new(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(ours),
    )
}

impl Telemetry {
    /// Exports what is still queued (within [`SHUTDOWN_FLUSH`]) and stops the exporter.
    /// The SDK blocks its caller meanwhile: done on a blocking thread, while the runtime
    /// goes on serving the export request itself.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_FLUSH))
                .await;
        match done {
            Ok(Ok(())) => tracing::info!("traces flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "traces not all flushed"),
            Err(e) => tracing::warn!(error = %e, "the trace flush panicked"),
        }
    }
}

/// The engine's and the server's [`TraceLink`] over `tracing-opentelemetry`.
pub struct OtelLink;

impl TraceLink for OtelLink {
    fn traceparent(&self, span: &tracing::Span) -> Option<Traceparent> {
        let context = span.context();
        let found = context.span();
        let found = found.span_context();
        found.is_valid().then(|| Traceparent {
            trace_id: found.trace_id().to_bytes(),
            span_id: found.span_id().to_bytes(),
            flags: found.trace_flags().to_u8(),
        })
    }

    fn adopt(&self, span: &tracing::Span, parent: &Traceparent) {
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            // Only the sampled bit is carried on (the parser keeps no other).
            TraceFlags::new(parent.flags & TraceFlags::SAMPLED.to_u8()),
            true,
            TraceState::default(),
        );
        if let Err(e) = span.set_parent(Context::new().with_remote_span_context(remote)) {
            tracing::debug!(error = %e, "trace parent not set");
        }
    }
}

/// The exporter's HTTP client: the workspace's reqwest, whose requests run on the
/// runtime although the batch processor exports from a thread of its own.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let mut response = client.execute(request).await?;
            let mut head = Response::builder().status(response.status());
            if let Some(headers) = head.headers_mut() {
                *headers = response.headers().clone();
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
                body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
                if body.len() >= MAX_RESPONSE_BYTES {
                    break;
                }
            }
            Ok::<_, HttpError>(head.body(Bytes::from(body))?)
        });
        sent.await?
    }
}

#[cfg(test)]
mod tests;

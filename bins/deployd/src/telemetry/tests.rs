//! The exporter's layer and trace link against an in-process exporter: which spans are exported, how a caller's `traceparent` is adopted and carried on, what the sampler keeps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

/// Keeps what it is given: the simple processor hands it each span as it ends.
#[derive(Debug, Clone, Default)]
struct Kept(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Kept {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn config() -> OtlpConfig {
    OtlpConfig {
        traces_url: "http://127.0.0.1:4318/v1/traces".parse().unwrap(),
        service_name: "deployd-test".to_owned(),
        resource_attributes: BTreeMap::from([("deployment.environment".into(), "test".into())]),
    }
}

/// Runs `f` under a subscriber with only the exporter's layer; returns its result and
/// the spans exported.
fn traced<R>(f: impl FnOnce() -> R) -> (R, Vec<SpanData>) {
    let kept = Kept::default();
    let provider = provider(
        SdkTracerProvider::builder().with_simple_exporter(kept.clone()),
        &config(),
    );
    let subscriber = tracing_subscriber::registry().with(layer(&provider));
    let out = tracing::subscriber::with_default(subscriber, f);
    provider.shutdown().unwrap();
    let spans = std::mem::take(&mut *kept.0.lock().unwrap());
    (out, spans)
}

fn parent(flags: u8) -> Traceparent {
    Traceparent::parse(&format!(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags:02x}"
    ))
    .unwrap()
}

#[test]
fn only_trace_spans_are_exported_without_the_log_events() {
    let ((), spans) = traced(|| {
        let span = tracing::info_span!(target: TRACE_TARGET, "request", otel.name = "GET /x");
        let _in = span.enter();
        // A log line (operator names, error texts) and a log span: neither exported.
        tracing::info!(operator = "alice", "token revoked");
        let plain = tracing::info_span!("plain");
        let _plain = plain.enter();
        tracing::warn!("something failed: secret-looking text");
    });
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span.name, "GET /x");
    assert!(span.events.is_empty(), "{:?}", span.events);
}

#[test]
fn a_trace_event_is_an_event_of_its_span() {
    let ((), spans) = traced(|| {
        let span = tracing::info_span!(target: TRACE_TARGET, "health", otel.name = "health.verify");
        let _in = span.enter();
        tracing::info!(target: TRACE_TARGET, outcome = "error", "health check call failed");
    });
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].events.len(), 1);
}

#[test]
fn a_sampled_parent_is_adopted_and_carried_on() {
    let tp = parent(1);
    let (carried, spans) = traced(|| {
        let span = tracing::info_span!(target: TRACE_TARGET, "job", otel.name = "deploy.job");
        OtelLink.adopt(&span, &tp);
        let _in = span.enter();
        OtelLink.traceparent(&span)
    });
    let carried = carried.expect("a recorded span has a trace context");
    assert_eq!(carried.trace_id, tp.trace_id);
    assert_ne!(carried.span_id, tp.span_id);
    assert!(carried.sampled());
    // What a job stores reads back as what was carried (the stored form is the text).
    assert_eq!(Traceparent::parse(&carried.to_string()).unwrap(), carried);
    assert_eq!(spans.len(), 1);
    assert_eq!(
        spans[0].span_context.trace_id(),
        TraceId::from_bytes(tp.trace_id)
    );
    assert_eq!(spans[0].parent_span_id, SpanId::from_bytes(tp.span_id));
    assert_eq!(
        spans[0].span_context.span_id(),
        SpanId::from_bytes(carried.span_id)
    );
}

#[test]
fn an_unsampled_parent_exports_nothing_and_is_carried_on_unsampled() {
    let tp = parent(0);
    let (carried, spans) = traced(|| {
        let span = tracing::info_span!(target: TRACE_TARGET, "request", otel.name = "POST /x");
        OtelLink.adopt(&span, &tp);
        let _in = span.enter();
        let child = tracing::info_span!(target: TRACE_TARGET, "task", otel.name = "deploy.task");
        let _child = child.enter();
        OtelLink.traceparent(&span)
    });
    assert!(spans.is_empty(), "{spans:#?}");
    let carried = carried.expect("the caller's trace goes on, unsampled");
    assert_eq!(carried.trace_id, tp.trace_id);
    assert!(!carried.sampled());
}

#[test]
fn unknown_flag_bits_are_not_carried_on() {
    let tp = Traceparent {
        flags: 0xff,
        ..parent(1)
    };
    let (carried, spans) = traced(|| {
        let span = tracing::info_span!(target: TRACE_TARGET, "job", otel.name = "deploy.job");
        OtelLink.adopt(&span, &tp);
        let _in = span.enter();
        OtelLink.traceparent(&span)
    });
    assert_eq!(carried.unwrap().flags, 0x01);
    assert_eq!(spans.len(), 1);
}

#[test]
fn a_root_span_starts_a_recorded_trace() {
    let (carried, spans) = traced(|| {
        let span = tracing::info_span!(target: TRACE_TARGET, "job", otel.name = "deploy.job");
        let _in = span.enter();
        OtelLink.traceparent(&span)
    });
    assert!(carried.unwrap().sampled());
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].parent_span_id, SpanId::INVALID);
}

#[test]
fn outside_a_trace_span_there_is_no_context() {
    let (carried, spans) = traced(|| {
        let plain = tracing::info_span!("request");
        let _in = plain.enter();
        OtelLink.traceparent(&tracing::Span::current())
    });
    assert_eq!(carried, None);
    assert!(spans.is_empty());
}

#[test]
fn the_log_output_never_takes_the_trace_spans() {
    use tracing_subscriber::Layer as _;
    for rust_log in [
        "info",
        "trace",
        "deploy_trace=trace",
        "trace,deploy_trace=trace",
    ] {
        let filter = crate::log_filter(Ok(tracing_subscriber::EnvFilter::new(rust_log))).unwrap();
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(filter);
        let subscriber = tracing_subscriber::registry().with(logs);
        tracing::subscriber::with_default(subscriber, || {
            assert!(
                !tracing::enabled!(target: TRACE_TARGET, tracing::Level::ERROR),
                "RUST_LOG={rust_log}"
            );
            assert_eq!(
                tracing::enabled!(target: "deploy_engine", tracing::Level::INFO),
                rust_log != "deploy_trace=trace",
                "RUST_LOG={rust_log}"
            );
        });
    }
}

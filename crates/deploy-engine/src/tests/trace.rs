//! The trace link and the trace spans: a job created under a traced span stores that span's context, and whichever engine runs it (another replica on the same database) makes it the job span's parent; a rollback joins the failed job's trace; an untraced engine stores nothing; with trace spans wanted a job's run is job -> wave -> task -> executor call / health verification, and with them unwanted (deployd's log output) not one is made.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use deploy_core::JobStatus;
use deploy_core::testing::digest;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use super::fake::{FakeWorld, Fixture, release_with};
use crate::{TRACE_TARGET, TraceLink, Traceparent};

const CREATED_IN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const RUN_IN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01";

/// A link whose current span is always `current`; it records which span (by name) it
/// is asked to adopt what.
struct Recording {
    current: Option<Traceparent>,
    adopted: Mutex<Vec<(String, Traceparent)>>,
}

impl Recording {
    fn new(current: Option<&str>) -> Arc<Self> {
        Arc::new(Self {
            current: current.map(|c| Traceparent::parse(c).unwrap()),
            adopted: Mutex::new(Vec::new()),
        })
    }

    fn adopted(&self) -> Vec<(String, String)> {
        let adopted = self.adopted.lock().unwrap();
        adopted
            .iter()
            .map(|(span, tp)| (span.clone(), tp.to_string()))
            .collect()
    }
}

impl TraceLink for Recording {
    fn traceparent(&self, _span: &tracing::Span) -> Option<Traceparent> {
        self.current
    }

    fn adopt(&self, span: &tracing::Span, parent: &Traceparent) {
        // A disabled span keeps its metadata: the name says which span it is.
        let name = span.metadata().map_or("<none>", |m| m.name()).to_owned();
        self.adopted.lock().unwrap().push((name, *parent));
    }
}

#[tokio::test]
async fn a_job_runs_in_the_trace_it_was_created_in_on_any_engine() {
    let dir = deploy_testkit::temp_dir("engine-trace-").unwrap();
    let path = dir.path().to_path_buf();
    let world = Arc::new(FakeWorld::default());
    let creator = Fixture::open(1, dir, world.clone(), true).await;
    let at_creation = Recording::new(Some(CREATED_IN));
    creator.engine.set_trace_link(at_creation.clone());
    let job = creator.job(1, &release_with(1, digest(1)), |_| {}).await;
    assert_eq!(
        creator
            .store
            .job_trace_context(job.id)
            .await
            .unwrap()
            .map(|tp| tp.to_string())
            .as_deref(),
        Some(CREATED_IN)
    );

    // Another engine on the same database (a replica, or this one after a restart),
    // whose own current span is elsewhere: the job's span takes the stored context.
    let runner = Fixture::open_at(1, &path, world).await;
    let running = Recording::new(None);
    runner.engine.set_trace_link(running.clone());
    let done = runner.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(
        running.adopted(),
        [("job".to_owned(), CREATED_IN.to_owned())]
    );
    assert!(at_creation.adopted().is_empty());
}

#[tokio::test]
async fn an_automatic_rollback_joins_the_failed_jobs_trace() {
    let f = Fixture::new(1).await;
    let v1 = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    f.engine.run_to_settled(v1.id).await.unwrap();
    f.world.broken.lock().unwrap().insert(digest(3));
    let v3 = f
        .job(2, &release_with(3, digest(3)), |r| {
            r.failure_policy.auto_rollback = true;
        })
        .await;
    // The run's current span (the failed job's) has context RUN_IN.
    let link = Recording::new(Some(RUN_IN));
    f.engine.set_trace_link(link.clone());
    let done = f.engine.run_to_settled(v3.id).await.unwrap();
    assert_eq!(done.status, JobStatus::RolledBack);
    let jobs = f.store.list_jobs(None, None, None, 10).await.unwrap();
    let rollback = jobs
        .iter()
        .find(|j| j.rollback_of == Some(v3.id))
        .expect("a rollback job");
    assert_eq!(
        f.store
            .job_trace_context(rollback.id)
            .await
            .unwrap()
            .map(|tp| tp.to_string())
            .as_deref(),
        Some(RUN_IN)
    );
    // Its run adopted it.
    assert!(
        link.adopted()
            .contains(&("job".to_owned(), RUN_IN.to_owned())),
        "{:?}",
        link.adopted()
    );
}

#[tokio::test]
async fn without_a_link_nothing_is_stored() {
    let f = Fixture::new(1).await;
    let job = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    assert_eq!(f.store.job_trace_context(job.id).await.unwrap(), None);
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
}

/// Records each new span as `(otel.name or name, parent's)`, and the trace events.
#[derive(Clone, Default)]
struct Spans {
    made: Arc<Mutex<Vec<(String, String)>>>,
    events: Arc<Mutex<Vec<String>>>,
}

struct Named(String);

struct OtelName(Option<String>);

impl Visit for OtelName {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "otel.name" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "otel.name" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut name = OtelName(None);
        attrs.record(&mut name);
        let name = name.0.unwrap_or_else(|| attrs.metadata().name().to_owned());
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Named>().map(|n| n.0.clone()))
            .unwrap_or_default();
        span.extensions_mut().insert(Named(name.clone()));
        self.made.lock().unwrap().push((name, parent));
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == TRACE_TARGET {
            self.events
                .lock()
                .unwrap()
                .push(event.metadata().name().to_owned());
        }
    }
}

/// Runs a one-target job (its health check a command, which passes) under a
/// subscriber whose one layer takes what `filter` lets through; the spans it saw.
async fn run_observed(filter: Targets) -> Spans {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone().with_filter(filter));
    // The test's runtime has one thread: the job's tasks run under this subscriber.
    let _default = tracing::subscriber::set_default(subscriber);
    let f = Fixture::new(1).await;
    let job = f.job(1, &release_with(1, digest(1)), |_| {}).await;
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    spans
}

#[tokio::test]
async fn a_traced_run_is_job_wave_task_and_its_executor_calls() {
    let spans = run_observed(Targets::new().with_target(TRACE_TARGET, LevelFilter::INFO)).await;
    let made: BTreeSet<(String, String)> = spans.made.lock().unwrap().iter().cloned().collect();
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    for expected in [
        pair("deploy.job", ""),
        pair("deploy.wave", "deploy.job"),
        pair("deploy.task", "deploy.wave"),
        // Every engine-side executor call, through the decorator.
        pair("executor.deploy", "deploy.task"),
        pair("health.verify", "deploy.task"),
    ] {
        assert!(made.contains(&expected), "{expected:?} not in {made:#?}");
    }
    // A passing health check leaves no span per call, nor any event.
    assert!(
        !made.iter().any(|(_, parent)| parent == "health.verify"),
        "{made:#?}"
    );
    assert!(spans.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn with_trace_spans_unwanted_none_is_made() {
    // deployd's log output: everything at info but the trace target.
    let filter = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target(TRACE_TARGET, LevelFilter::OFF);
    let spans = run_observed(filter).await;
    let made = spans.made.lock().unwrap().clone();
    assert!(made.is_empty(), "{made:#?}");
}

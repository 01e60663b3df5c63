//! The console's overview: every environment in pipeline order with the release it runs, the job in flight and its targets' digests and health; and the on-demand live inspect of one environment.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use deploy_api::Role;
use deploy_core::{
    Environment, EnvironmentId, JobStatus, Release, ReleaseId, Strategy, Target, TargetId,
};
use deploy_store::{JobQuery, JobSummary, LastKnownGood, TargetTaskState};
use serde::Deserialize;

use super::page::{self, Chrome, PageError, Section};
use super::session::{ConsoleUser, PageResult};
use crate::errors::ServerError;
use crate::resolve::{self, Source};
use crate::state::ServerState;

/// Environments per overview page.
const PAGE_SIZE: usize = 50;
/// Environments read per store query while ordering them (all are read: a
/// topological order needs the whole graph; an environment row is small).
const ENV_SCAN: u32 = 500;
/// The newest jobs of an environment read for its in-flight job and its targets'
/// health: a job in flight and the ones queued behind it are among the newest.
/// No job is loaded with its tasks: the health column reads, per job and target, how
/// its tasks stand (at most `RECENT_JOBS` x targets rows per environment), so a page
/// costs the same with 1,000-task jobs as with one-task jobs.
const RECENT_JOBS: u32 = 5;

/// The overview routes.
pub(super) fn routes() -> Router<ServerState> {
    Router::new()
        .route("/ui/", get(overview))
        .route("/ui/environments/{id}/live", get(live))
}

/// The overview's query: a page of the pipeline order (1-based). A page number, not
/// an id cursor: the order is topological, not by id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverviewQuery {
    page: Option<usize>,
}

/// The overview page.
#[derive(askama::Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    environments: Vec<EnvView>,
    page: usize,
    newer: Option<usize>,
    older: Option<usize>,
}

/// One environment on the overview.
struct EnvView {
    id: String,
    name: String,
    /// Names of the environments a release must have completed in first.
    requires: Vec<String>,
    release: Option<ReleaseView>,
    in_flight: Option<InFlight>,
    targets: Vec<TargetRow>,
}

/// The release an environment runs: that of its last completed job.
struct ReleaseView {
    id: String,
    name: String,
    job_id: String,
    completed_at: String,
}

/// The job of an environment that is not settled yet.
struct InFlight {
    id: String,
    status: &'static str,
    /// Jobs waiting in line behind it.
    queued: usize,
}

/// One target row.
struct TargetRow {
    name: String,
    kind: &'static str,
    model: &'static str,
    labels: Vec<(String, String)>,
    disabled: bool,
    /// What the last completed job touching the target deployed there, per component.
    digests: Vec<DigestView>,
    health: &'static str,
    health_source: String,
}

/// One digest, shortened, with its full value and its component.
struct DigestView {
    component: Option<String>,
    short: String,
    full: String,
}

impl DigestView {
    fn new(component: Option<String>, digest: &str) -> Self {
        Self {
            component,
            short: page::short_digest(digest),
            full: digest.to_owned(),
        }
    }
}

/// `GET /ui/`: environments in pipeline order, 50 per page.
///
/// Store queries: `ceil(environments / 500)` to read and order every environment,
/// then per environment on the page 5 (its targets, its 5 newest jobs' summaries, how
/// their tasks stand per target, its last completed job, its last-known-good digests)
/// plus one per distinct release shown: at most 6 per environment, none of which
/// reads more than a page's worth of rows.
async fn overview(
    State(state): State<ServerState>,
    user: ConsoleUser,
    query: Result<Query<OverviewQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(|e| PageError::bad_request(e.body_text()))?;
    let page = query.page.unwrap_or(1).max(1);
    let ordered = pipeline_order(all_environments(&state).await?);
    let names: HashMap<EnvironmentId, String> = ordered
        .iter()
        .map(|e| (e.id, e.name.as_str().to_owned()))
        .collect();
    let start = (page - 1).saturating_mul(PAGE_SIZE);
    let mut releases: HashMap<ReleaseId, Release> = HashMap::new();
    let mut environments = Vec::new();
    for env in ordered.iter().skip(start).take(PAGE_SIZE) {
        environments.push(env_view(&state, env, &names, &mut releases).await?);
    }
    page::render(&OverviewPage {
        chrome: Chrome::new(&user, Section::Overview),
        environments,
        page,
        newer: (page > 1).then(|| page - 1),
        older: (start + PAGE_SIZE < ordered.len()).then_some(page + 1),
    })
}

/// Every environment, read `ENV_SCAN` at a time (the store lists newest first).
async fn all_environments(state: &ServerState) -> Result<Vec<Environment>, PageError> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let chunk = state.store().list_environments(before, ENV_SCAN).await?;
        let full = chunk.len() == ENV_SCAN as usize;
        before = chunk.last().map(|e| e.id);
        all.extend(chunk);
        if !full {
            return Ok(all);
        }
    }
}

/// Environments ordered so that each comes after every environment it requires
/// (a topological order of the pipeline); among those ready at once, by name.
/// Requirements on environments not listed (deleted) are ignored; a cycle (which
/// the API refuses) would leave its members at the end, by name.
fn pipeline_order(environments: Vec<Environment>) -> Vec<Environment> {
    let ids: BTreeSet<EnvironmentId> = environments.iter().map(|e| e.id).collect();
    let mut waiting_on: HashMap<EnvironmentId, usize> = HashMap::new();
    let mut unblocks: HashMap<EnvironmentId, Vec<EnvironmentId>> = HashMap::new();
    for env in &environments {
        let upstream: BTreeSet<_> = env.requires.iter().filter(|r| ids.contains(r)).collect();
        waiting_on.insert(env.id, upstream.len());
        for up in upstream {
            unblocks.entry(*up).or_default().push(env.id);
        }
    }
    let mut by_id: HashMap<EnvironmentId, Environment> =
        environments.into_iter().map(|e| (e.id, e)).collect();
    let key = |e: &Environment| (e.name.as_str().to_owned(), e.id);
    let mut ready: BTreeSet<(String, EnvironmentId)> = by_id
        .values()
        .filter(|e| waiting_on.get(&e.id) == Some(&0))
        .map(key)
        .collect();
    let mut out = Vec::with_capacity(by_id.len());
    while let Some(next) = ready.pop_first() {
        let Some(env) = by_id.remove(&next.1) else {
            continue;
        };
        for down in unblocks.get(&env.id).into_iter().flatten() {
            if let Some(n) = waiting_on.get_mut(down) {
                *n = n.saturating_sub(1);
                if *n == 0
                    && let Some(d) = by_id.get(down)
                {
                    ready.insert(key(d));
                }
            }
        }
        out.push(env);
    }
    let mut rest: Vec<Environment> = by_id.into_values().collect();
    rest.sort_by_key(key);
    out.extend(rest);
    out
}

/// One environment's view (at most 6 store queries; see [`overview`]).
async fn env_view(
    state: &ServerState,
    env: &Environment,
    names: &HashMap<EnvironmentId, String>,
    releases: &mut HashMap<ReleaseId, Release>,
) -> Result<EnvView, PageError> {
    let store = state.store();
    let targets = store.list_targets(env.id).await?;
    let recent = store
        .list_job_summaries(&JobQuery {
            environment: Some(env.id),
            limit: RECENT_JOBS,
            ..JobQuery::default()
        })
        .await?;
    let task_states = store.recent_target_tasks(env.id, RECENT_JOBS).await?;
    let last_completed = store
        .list_job_summaries(&last_completed_query(env.id))
        .await?
        .into_iter()
        .next();
    let known_good = store.last_known_good(env.id).await?;

    let release = match &last_completed {
        Some(job) => {
            let release = release_of(state, job.release_id, releases).await?;
            Some(ReleaseView {
                id: release.id.to_string(),
                name: release.name.as_str().to_owned(),
                job_id: job.id.to_string(),
                completed_at: page::time_or_dash(job.completed_at),
            })
        }
        None => None,
    };
    let component_names = component_names(state, &known_good, releases).await?;

    // The newest unsettled job that is not waiting in line is the one running.
    let unsettled: Vec<&JobSummary> = recent.iter().filter(|j| !is_settled(j)).collect();
    let in_flight = unsettled
        .iter()
        .find(|j| j.queued_behind.is_none())
        .or(unsettled.first())
        .map(|j| InFlight {
            id: j.id.to_string(),
            status: j.status.as_str(),
            queued: unsettled.len() - 1,
        });

    let targets = targets
        .iter()
        .map(|t| target_row(t, &known_good, &component_names, &task_states))
        .collect();
    Ok(EnvView {
        id: env.id.to_string(),
        name: env.name.as_str().to_owned(),
        requires: env
            .requires
            .iter()
            .filter_map(|r| names.get(r).cloned())
            .collect(),
        release,
        in_flight,
        targets,
    })
}

/// The environment's last completed job: only its row is used (id, release,
/// completion time), so a summary, which loads none of its tasks.
fn last_completed_query(environment: EnvironmentId) -> JobQuery {
    JobQuery {
        environment: Some(environment),
        status: Some(JobStatus::Completed),
        limit: 1,
        ..JobQuery::default()
    }
}

/// Whether the job is settled (as [`deploy_core::DeploymentJob::is_settled`]).
fn is_settled(job: &JobSummary) -> bool {
    !job.status.is_active() && !job.winding_down
}

/// The names of the components `known_good` names. A target's last good digests may
/// come from several jobs (a component left out of a later release keeps its older
/// one), so each distinct job's release is read, once per page.
async fn component_names(
    state: &ServerState,
    known_good: &[LastKnownGood],
    releases: &mut HashMap<ReleaseId, Release>,
) -> Result<HashMap<deploy_core::ComponentId, String>, PageError> {
    let jobs: BTreeSet<deploy_core::JobId> = known_good.iter().map(|k| k.job_id).collect();
    let mut names = HashMap::new();
    for job in jobs {
        let release_id = state.store().get_job_summary(job).await?.release_id;
        let release = release_of(state, release_id, releases).await?;
        names.extend(
            release
                .components
                .iter()
                .map(|c| (c.id, c.name.as_str().to_owned())),
        );
    }
    Ok(names)
}

/// The release `id`, read once per page.
async fn release_of<'a>(
    state: &ServerState,
    id: ReleaseId,
    releases: &'a mut HashMap<ReleaseId, Release>,
) -> Result<&'a Release, PageError> {
    if let std::collections::hash_map::Entry::Vacant(slot) = releases.entry(id) {
        slot.insert(state.store().get_release(id).await?);
    }
    releases
        .get(&id)
        .ok_or_else(|| PageError::internal("a release read a moment ago is gone"))
}

fn target_row(
    target: &Target,
    known_good: &[LastKnownGood],
    component_names: &HashMap<deploy_core::ComponentId, String>,
    recent: &[TargetTaskState],
) -> TargetRow {
    let digests = known_good
        .iter()
        .filter(|k| k.target_id == target.id)
        .map(|k| {
            DigestView::new(
                k.component_id.map(|c| {
                    component_names
                        .get(&c)
                        .cloned()
                        .unwrap_or_else(|| c.to_string())
                }),
                k.digest.as_str(),
            )
        })
        .collect();
    let (health, health_source) = health_of(target.id, recent);
    TargetRow {
        name: target.name.as_str().to_owned(),
        kind: target.target_type.as_str(),
        model: target.execution_model().as_str(),
        labels: target
            .labels
            .as_map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        disabled: target.disabled,
        digests,
        health,
        health_source,
    }
}

/// The target's health as last known, and where that comes from: its tasks in the
/// environment's newest jobs (`recent`: per job and target, newest job first). A
/// succeeded task passed its health verification when it deployed; a failed one did
/// not (or failed before). A started task of an unsettled job is still deploying.
/// Nothing else records health, so without such a task it is `unknown` (the live
/// inspect asks the target itself).
fn health_of(target: TargetId, recent: &[TargetTaskState]) -> (&'static str, String) {
    for tasks in recent
        .iter()
        .filter(|r| r.target_id == target && r.tasks > 0)
    {
        let id = tasks.job_id.to_string();
        let short = short_id(&id);
        if tasks.failed > 0 {
            return ("unhealthy", format!("a task of job {short} failed"));
        }
        if tasks.succeeded == tasks.tasks {
            return ("healthy", format!("verified when job {short} deployed it"));
        }
        // A task not dispatched yet (a queued job's, a cancelled one's) says nothing.
        if tasks.started > 0 && !tasks.job_settled() {
            return ("deploying", format!("job {short} is deploying it"));
        }
    }
    ("unknown", "no recent job verified this target".to_owned())
}

/// The first 8 characters of an id, for titles.
fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The live inspect page.
#[derive(askama::Template)]
#[template(path = "console/environment_live.html")]
struct LivePage {
    chrome: Chrome,
    env_name: String,
    release: Option<(String, String)>,
    rows: Vec<LiveRow>,
    /// Disabled targets, not inspected.
    skipped: Vec<String>,
    drifted: usize,
}

/// One (target, component) as inspected now.
struct LiveRow {
    target: String,
    component: Option<String>,
    expected: Option<DigestView>,
    running: Option<DigestView>,
    error: Option<String>,
    drift: bool,
}

/// `GET /ui/environments/{id}/live` (deployer): asks every enabled target what it
/// runs now, through the same preview the API's `POST /api/v1/plan` makes (with the
/// release of the environment's last completed job), bounded by the plan timeout,
/// and compares it with what the last completed jobs deployed there.
async fn live(
    State(state): State<ServerState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    // Inspecting reaches every target: the API's plan asks for a deployer too.
    user.require(Role::Deployer)?;
    let env = resolve::environment(&state, &id, Source::Path).await?;
    let store = state.store();
    let last_completed = store
        .list_job_summaries(&last_completed_query(env.id))
        .await?
        .into_iter()
        .next();
    let chrome = Chrome::new(&user, Section::Overview);
    let Some(job) = last_completed else {
        return page::render(&LivePage {
            chrome,
            env_name: env.name.as_str().to_owned(),
            release: None,
            rows: Vec::new(),
            skipped: Vec::new(),
            drifted: 0,
        });
    };
    let release = store.get_release(job.release_id).await?;
    let known_good = store.last_known_good(env.id).await?;
    let bound = state.config().plan_timeout;
    let preview = tokio::time::timeout(
        bound,
        state
            .plan_engine()
            .preview(release.id, env.id, &Strategy::AllAtOnce, NonZeroU32::MAX),
    )
    .await
    .map_err(|_| {
        PageError::from(ServerError::Unavailable(format!(
            "the targets did not all answer within {bound:?}; retry later"
        )))
    })??;

    // What was deployed, by (target, component name); compose hosts have no component.
    let component_ids = component_names(&state, &known_good, &mut HashMap::new()).await?;
    let expected: BTreeMap<(TargetId, Option<String>), String> = known_good
        .iter()
        .map(|k| {
            let component = k.component_id.map(|c| {
                component_ids
                    .get(&c)
                    .cloned()
                    .unwrap_or_else(|| c.to_string())
            });
            ((k.target_id, component), k.digest.as_str().to_owned())
        })
        .collect();
    // Every entry once, although a target may appear in several waves.
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for entry in preview.waves.into_iter().flat_map(|w| w.entries) {
        let component = entry.component.as_ref().map(|c| c.as_str().to_owned());
        if !seen.insert((entry.target.id, component.clone())) {
            continue;
        }
        let want = expected
            .get(&(entry.target.id, component.clone()))
            .cloned()
            .or_else(|| entry.digest.as_ref().map(|d| d.as_str().to_owned()));
        let (running, error) = match entry.running {
            Ok(r) => (r.map(|d| d.as_str().to_owned()), None),
            Err(why) => (None, Some(why)),
        };
        let drift = error.is_none() && want.is_some() && running != want;
        rows.push(LiveRow {
            target: entry.target.name.as_str().to_owned(),
            component: component.clone(),
            expected: want.map(|d| DigestView::new(component.clone(), &d)),
            running: running.map(|d| DigestView::new(component.clone(), &d)),
            error,
            drift,
        });
    }
    let drifted = rows.iter().filter(|r| r.drift).count();
    page::render(&LivePage {
        chrome,
        env_name: env.name.as_str().to_owned(),
        release: Some((release.id.to_string(), release.name.as_str().to_owned())),
        rows,
        skipped: preview
            .skipped
            .iter()
            .map(|t| t.name.as_str().to_owned())
            .collect(),
        drifted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::{Name, Timestamp};

    fn env(name: &str, requires: &[&Environment]) -> Environment {
        let created_at = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let mut random = [0u8; 10];
        random[..name.len().min(10)].copy_from_slice(&name.as_bytes()[..name.len().min(10)]);
        Environment {
            id: EnvironmentId::from_parts(created_at, random),
            name: Name::parse(name).unwrap(),
            hooks: Default::default(),
            variables: Default::default(),
            approval: None,
            requires: requires.iter().map(|e| e.id).collect(),
            runtime_policy: Default::default(),
            version: 1,
            created_at,
        }
    }

    /// How job `n`'s tasks (`tasks` of them) stand on `target`.
    fn on(
        n: u64,
        status: JobStatus,
        target: TargetId,
        (tasks, succeeded, failed, started): (u32, u32, u32, u32),
    ) -> TargetTaskState {
        TargetTaskState {
            job_id: deploy_core::testing::job_id(n),
            job_status: status,
            winding_down: false,
            target_id: target,
            tasks,
            succeeded,
            failed,
            started,
        }
    }

    #[test]
    fn health_comes_from_the_newest_job_that_says_something_about_the_target() {
        use JobStatus::*;
        let (a, b) = (
            deploy_core::testing::target_id(1),
            deploy_core::testing::target_id(2),
        );
        let health = |rows: &[TargetTaskState], t| health_of(t, rows).0;
        // A completed job whose tasks all succeeded: healthy.
        let done = on(1, Completed, a, (2, 2, 0, 2));
        assert_eq!(health(std::slice::from_ref(&done), a), "healthy");
        assert_eq!(health(std::slice::from_ref(&done), b), "unknown");
        // One failed task of the newest job: unhealthy, whatever came before.
        let failed = on(2, Failed, a, (2, 1, 1, 2));
        assert_eq!(health(&[failed.clone(), done.clone()], a), "unhealthy");
        // A running job that started on the target: deploying.
        let running = on(3, Running, a, (2, 1, 0, 2));
        assert_eq!(health(&[running.clone(), done.clone()], a), "deploying");
        // A job that dispatched nothing there yet, or a settled one that left tasks
        // unfinished (rolled back), says nothing: the next older job decides.
        let queued = on(4, Pending, a, (2, 0, 0, 0));
        assert_eq!(health(&[queued, done.clone()], a), "healthy");
        let rolled_back = on(5, RolledBack, a, (2, 1, 0, 1));
        assert_eq!(health(&[rolled_back, failed], a), "unhealthy");
        // A failed job still winding down is not settled: its started tasks deploy.
        let mut winding = on(6, Failed, a, (2, 1, 0, 2));
        winding.winding_down = true;
        assert_eq!(health(&[winding, done], a), "deploying");
    }

    #[test]
    fn upstream_environments_come_first_and_ties_go_by_name() {
        let dev = env("dev", &[]);
        let qa = env("qa", &[&dev]);
        let staging = env("staging", &[&dev]);
        let prod = env("prod", &[&staging, &qa]);
        let alpha = env("alpha", &[]);
        let order = pipeline_order(vec![prod, staging, alpha, qa, dev]);
        let names: Vec<_> = order.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["alpha", "dev", "qa", "staging", "prod"]);
    }
}

//! Names or ids: every reference to an environment, a target, a release, a token or an agent may be its UUID or its name; a miss names what was asked and the closest names that exist.

use deploy_core::{Environment, EnvironmentId, Release, ReleaseId, Target, TargetId};
use deploy_store::StoreError;
use uuid::Uuid;

use crate::errors::ServerError;
use crate::state::ServerState;

type ApiResult<T> = Result<T, ServerError>;

/// Where a reference came from: a path segment (a miss is 404) or a body or query field
/// (a miss is 422 naming the field).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    Path,
    Field(&'a str),
}

/// A reference that is no UUID must at least be a name (`[a-z0-9][a-z0-9_.-]*`, at
/// most 63 bytes): anything else is a malformed request (400), not a miss.
fn check_name(entity: &str, reference: &str, from: Source<'_>) -> ApiResult<()> {
    deploy_core::Name::parse(reference)
        .map(|_| ())
        .map_err(|e| {
            let shown: String = reference.chars().take(80).collect();
            let field = match from {
                Source::Path => "id",
                Source::Field(f) => f,
            };
            ServerError::bad_request(
                format!("`{shown}` is neither a {entity} id (a UUID) nor a {entity} name: {e}"),
                Some(field),
            )
        })
}

/// How many names are scanned for close matches (an error path: bounded, not exhaustive).
const SUGGESTION_SCAN: u32 = 500;

/// The environment `reference` names (its id or its name).
pub(crate) async fn environment(
    state: &ServerState,
    reference: &str,
    from: Source<'_>,
) -> ApiResult<Environment> {
    if let Ok(id) = EnvironmentId::parse(reference) {
        return by_id(
            state.store().get_environment(id).await,
            "environment",
            reference,
            from,
        );
    }
    check_name("environment", reference, from)?;
    if let Some(found) = state.store().find_environment_by_name(reference).await? {
        return Ok(found);
    }
    let names: Vec<String> = state
        .store()
        .list_environments(None, SUGGESTION_SCAN)
        .await?
        .into_iter()
        .map(|e| e.name.as_str().to_owned())
        .collect();
    Err(missing("environment", reference, &names, from))
}

/// The environment a list is filtered by (its `environment` query field), as an id.
pub(crate) async fn environment_filter(
    state: &ServerState,
    reference: Option<&str>,
) -> ApiResult<Option<EnvironmentId>> {
    match reference {
        Some(e) => Ok(Some(
            environment(state, e, Source::Field("environment"))
                .await?
                .id,
        )),
        None => Ok(None),
    }
}

/// The release `reference` names (its id or its name).
pub(crate) async fn release(
    state: &ServerState,
    reference: &str,
    from: Source<'_>,
) -> ApiResult<Release> {
    if let Ok(id) = ReleaseId::parse(reference) {
        return by_id(
            state.store().get_release(id).await,
            "release",
            reference,
            from,
        );
    }
    check_name("release", reference, from)?;
    if let Some(found) = state.store().find_release_by_name(reference).await? {
        return Ok(found);
    }
    // The newest releases are the likely intended ones.
    let names: Vec<String> = state
        .store()
        .list_releases(None, 100)
        .await?
        .into_iter()
        .map(|r| r.name.as_str().to_owned())
        .collect();
    Err(missing("release", reference, &names, from))
}

/// The target of `targets` (one environment's) that `reference` names.
pub(crate) fn target(
    targets: Vec<Target>,
    environment: &Environment,
    reference: &str,
) -> ApiResult<Target> {
    let id = TargetId::parse(reference).ok();
    if id.is_none() {
        check_name("target", reference, Source::Path)?;
    }
    let names: Vec<String> = targets.iter().map(|t| t.name.as_str().to_owned()).collect();
    targets
        .into_iter()
        .find(|t| Some(t.id) == id || t.name.as_str() == reference)
        .ok_or_else(|| {
            let what = format!("target in environment `{}`", environment.name);
            missing(&what, reference, &names, Source::Path)
        })
}

/// A token or agent reference: its id, or the one record whose name it is.
pub(crate) fn by_name_or_id<T>(
    entity: &str,
    reference: &str,
    records: Vec<T>,
    id: impl Fn(&T) -> Uuid,
    name: impl Fn(&T) -> &str,
) -> ApiResult<T> {
    let wanted = Uuid::try_parse(reference).ok();
    let names: Vec<String> = records.iter().map(|r| name(r).to_owned()).collect();
    records
        .into_iter()
        .find(|r| Some(id(r)) == wanted || name(r) == reference)
        .ok_or_else(|| missing(entity, reference, &names, Source::Path))
}

/// Reads the entity by id; a missing one becomes the error `from` calls for.
fn by_id<T>(
    result: Result<T, StoreError>,
    entity: &str,
    reference: &str,
    from: Source<'_>,
) -> ApiResult<T> {
    match result {
        Err(StoreError::NotFound { .. }) => Err(not_there(
            format!("no {entity} with id `{reference}`"),
            from,
        )),
        other => Ok(other?),
    }
}

/// "no environment named `stagin`; did you mean `staging`?"
fn missing(entity: &str, reference: &str, names: &[String], from: Source<'_>) -> ServerError {
    let close = close_matches(reference, names);
    let detail = if close.is_empty() {
        format!("no {entity} named `{reference}`")
    } else {
        let list: Vec<String> = close.iter().map(|n| format!("`{n}`")).collect();
        format!(
            "no {entity} named `{reference}`; close matches: {}",
            list.join(", ")
        )
    };
    not_there(detail, from)
}

fn not_there(detail: String, from: Source<'_>) -> ServerError {
    match from {
        Source::Path => ServerError::NotFound(detail),
        Source::Field(field) => ServerError::unprocessable(detail, Some(field)),
    }
}

/// Up to three names within a small edit distance of `wanted`, or containing it
/// (case-insensitively), closest first.
pub(crate) fn close_matches<'a>(wanted: &str, names: &'a [String]) -> Vec<&'a str> {
    let wanted_lower = wanted.to_lowercase();
    let budget = (wanted.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = names
        .iter()
        .filter_map(|n| {
            let lower = n.to_lowercase();
            let distance = edit_distance(&wanted_lower, &lower);
            let contains = !wanted_lower.is_empty()
                && (lower.contains(&wanted_lower) || wanted_lower.contains(&lower));
            (distance <= budget || contains).then_some((distance, n.as_str()))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_matches_are_typos_and_substrings_closest_first() {
        let names: Vec<String> = ["staging", "prod", "production-eu", "dev"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(close_matches("stagin", &names), vec!["staging"]);
        assert_eq!(close_matches("prd", &names), vec!["prod"]);
        assert_eq!(
            close_matches("production", &names),
            vec!["production-eu", "prod"]
        );
        assert!(close_matches("heldout", &names).is_empty());
    }

    #[test]
    fn edit_distance_counts_characters() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("été", "ete"), 2);
    }

    #[test]
    fn a_miss_in_a_field_is_422_naming_it() {
        let err = missing(
            "release",
            "r3",
            &["r2".to_owned()],
            Source::Field("release"),
        );
        let problem = err.problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.field.as_deref(), Some("release"));
        assert_eq!(problem.detail, "no release named `r3`; close matches: `r2`");
    }
}

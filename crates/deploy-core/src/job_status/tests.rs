//! Exhaustive table and property tests of the job state machine.

use proptest::prelude::*;

use super::*;
use JobEvent as E;
use JobStatus as S;

/// The whole table: every (state, event) pair and its expected outcome (`None` = rejected).
/// Kept in the same order as the table in docs/ARCHITECTURE.md.
fn expected(state: S, event: E) -> Option<S> {
    match (state, event) {
        (S::Pending, E::Start) => Some(S::Preparing),
        (S::Pending, E::Cancel) => Some(S::Failed),
        (S::Preparing, E::ArtifactsReady) => Some(S::Running),
        (S::Preparing, E::Fail | E::Cancel) => Some(S::Failed),
        (S::Running, E::WavesSucceeded) => Some(S::Completing),
        (S::Running, E::Fail | E::Cancel) => Some(S::Failed),
        (S::Completing, E::VerificationPassed) => Some(S::Completed),
        (S::Completing, E::Fail | E::Cancel) => Some(S::Failed),
        (S::Failed, E::WoundDown) => Some(S::Failed),
        (S::Failed, E::RollbackStarted) => Some(S::RollingBack),
        (S::RollingBack, E::RollbackSucceeded) => Some(S::RolledBack),
        (S::RollingBack, E::RollbackFailed) => Some(S::Failed),
        _ => None,
    }
}

#[test]
fn every_state_event_pair_matches_the_table() {
    let mut accepted = 0;
    for state in S::ALL {
        for event in E::ALL {
            let got = state.apply(event).ok();
            assert_eq!(got, expected(state, event), "{state:?} + {event:?}");
            accepted += usize::from(got.is_some());
        }
    }
    assert_eq!(accepted, 15, "80 pairs, 15 of them legal");
}

#[test]
fn rejection_names_state_and_event() {
    let err = S::Completed.apply(E::Start).unwrap_err();
    assert_eq!(
        err.to_string(),
        "job in state `completed` cannot take event `start`: `completed` is terminal"
    );
    let err = S::Pending.apply(E::WavesSucceeded).unwrap_err();
    assert_eq!(
        err.to_string(),
        "job in state `pending` cannot take event `waves_succeeded`"
    );
}

#[test]
fn spellings_round_trip() {
    for s in S::ALL {
        assert_eq!(S::parse(s.as_str()), Some(s));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
    assert_eq!(S::parse("done"), None);
}

#[test]
fn the_happy_path_and_the_rollback_path() {
    let run = |events: &[E]| events.iter().try_fold(S::Pending, |s, e| s.apply(*e));
    assert_eq!(
        run(&[
            E::Start,
            E::ArtifactsReady,
            E::WavesSucceeded,
            E::VerificationPassed
        ]),
        Ok(S::Completed)
    );
    assert_eq!(
        run(&[
            E::Start,
            E::ArtifactsReady,
            E::Fail,
            E::RollbackStarted,
            E::RollbackSucceeded
        ]),
        Ok(S::RolledBack)
    );
    assert_eq!(
        run(&[
            E::Start,
            E::ArtifactsReady,
            E::WavesSucceeded,
            E::Fail,
            E::RollbackStarted,
            E::RollbackFailed
        ]),
        Ok(S::Failed)
    );
}

fn any_event() -> impl Strategy<Value = E> {
    prop::sample::select(E::ALL.to_vec())
}

proptest! {
    /// Random event sequences: rejected events leave the state unchanged, every
    /// reached state is in the table, and terminal states absorb.
    #[test]
    fn random_sequences_stay_legal(events in prop::collection::vec(any_event(), 0..64)) {
        let mut state = S::Pending;
        for event in events {
            let was_terminal = state.is_terminal();
            match state.apply(event) {
                Ok(next) => {
                    prop_assert!(!was_terminal, "terminal {state:?} accepted {event:?}");
                    prop_assert_eq!(Some(next), expected(state, event));
                    state = next;
                }
                Err(e) => {
                    prop_assert_eq!(expected(state, event), None);
                    prop_assert_eq!(e.from, state.as_str());
                }
            }
            prop_assert!(S::ALL.contains(&state));
            prop_assert!(!(state.is_active() && state.is_terminal()));
        }
    }
}

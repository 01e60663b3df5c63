//! Exhaustive table and property tests of the task state machine and its attempt budget.

use proptest::prelude::*;

use super::*;
use crate::testing::*;
use TaskEvent as E;
use TaskStatus as S;

/// The whole status table (`None` = rejected), in the order of docs/ARCHITECTURE.md.
fn expected(state: S, event: E) -> Option<S> {
    match (state, event) {
        (S::Pending, E::Enqueue) => Some(S::Queued),
        (S::Pending | S::Queued | S::Retrying, E::Dispatch) => Some(S::Dispatched),
        (S::Dispatched, E::Start) => Some(S::Running),
        (S::Running, E::Verify) => Some(S::Verifying),
        (S::Verifying, E::Succeed) => Some(S::Succeeded),
        (S::Queued | S::Dispatched | S::Running | S::Verifying, E::Fail { .. }) => Some(S::Failed),
        (S::Failed, E::Retry) => Some(S::Retrying),
        (S::Retrying, E::Enqueue) => Some(S::Queued),
        (S::Succeeded, E::Cancel) => None,
        (_, E::Cancel) => Some(S::Failed),
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
    // 7 cancels + 8 fails (4 states x 2 kinds) + 9 forward moves.
    assert_eq!(accepted, 24, "72 pairs, 24 of them legal");
}

#[test]
fn succeeded_is_terminal_and_says_so() {
    let err = S::Succeeded.apply(E::Cancel).unwrap_err();
    assert_eq!(
        err.to_string(),
        "task in state `succeeded` cannot take event `cancel`: `succeeded` is terminal"
    );
}

fn run(task: &mut DeploymentTask, events: &[E]) -> Result<S, crate::errors::InvalidTransition> {
    let mut last = task.status;
    for (i, e) in events.iter().enumerate() {
        last = task.apply(*e, ts(100 + i as u64))?;
    }
    Ok(last)
}

#[test]
fn a_retryable_failure_retries_until_the_budget_is_spent() {
    let mut t = task(1, 2);
    let attempt = [
        E::Enqueue,
        E::Dispatch,
        E::Start,
        E::Fail { retryable: true },
    ];
    run(&mut t, &attempt).unwrap();
    assert_eq!((t.status, t.attempt_number), (S::Failed, 1));
    assert!(t.can_retry() && !t.is_settled());
    run(
        &mut t,
        &[
            E::Retry,
            E::Enqueue,
            E::Dispatch,
            E::Fail { retryable: true },
        ],
    )
    .unwrap();
    assert_eq!(t.attempt_number, 2);
    assert!(t.is_settled());
    let err = t.apply(E::Retry, ts(500)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "task in state `failed` cannot take event `retry`: all 2 attempts are used"
    );
    // The second run's last event (the fail) happened at ts(103).
    assert_eq!(t.completed_at, Some(ts(103)));
}

#[test]
fn a_permanent_failure_is_not_retried() {
    let mut t = task(1, 3);
    run(
        &mut t,
        &[E::Enqueue, E::Dispatch, E::Fail { retryable: false }],
    )
    .unwrap();
    assert!(t.is_settled());
    assert_eq!(
        t.apply(E::Retry, ts(9)).unwrap_err().to_string(),
        "task in state `failed` cannot take event `retry`: the last failure is not retryable"
    );
}

#[test]
fn success_stamps_start_and_completion() {
    let mut t = task(1, 3);
    run(
        &mut t,
        &[E::Enqueue, E::Dispatch, E::Start, E::Verify, E::Succeed],
    )
    .unwrap();
    assert_eq!(t.status, S::Succeeded);
    assert_eq!(t.started_at, Some(ts(101)));
    assert_eq!(t.completed_at, Some(ts(104)));
    assert_eq!(t.updated_at, ts(104));
}

#[test]
fn the_engine_path_dispatches_from_pending_and_retrying_within_the_budget() {
    let mut t = task(1, 2);
    let first = [E::Dispatch, E::Start, E::Fail { retryable: true }];
    run(&mut t, &first).unwrap();
    assert_eq!((t.status, t.attempt_number), (S::Failed, 1));
    assert_eq!(t.started_at, Some(ts(100)));
    run(&mut t, &[E::Retry, E::Dispatch, E::Start, E::Verify]).unwrap();
    assert_eq!((t.status, t.attempt_number), (S::Verifying, 2));
    t.apply(E::Fail { retryable: true }, ts(200)).unwrap();
    // A retry is refused with the budget spent, and so is a dispatch.
    assert!(t.apply(E::Retry, ts(201)).is_err());
    let mut spent = task(2, 1);
    run(&mut spent, &[E::Dispatch, E::Fail { retryable: true }]).unwrap();
    spent.status = S::Retrying; // as if a retry had been granted
    assert_eq!(
        spent.apply(E::Dispatch, ts(300)).unwrap_err().to_string(),
        "task in state `retrying` cannot take event `dispatch`: all 1 attempts are used"
    );
    assert_eq!(
        spent.status,
        S::Retrying,
        "a refused dispatch changes nothing"
    );
}

fn any_event() -> impl Strategy<Value = E> {
    prop::sample::select(E::ALL.to_vec())
}

proptest! {
    /// Random event sequences never break the table, never exceed the attempt
    /// budget, leave the task unchanged on a rejected event, and settled tasks absorb
    /// everything but the idempotent cancel of an already failed task.
    #[test]
    fn random_sequences_respect_table_and_budget(
        max_attempts in 1u32..5,
        events in prop::collection::vec(any_event(), 0..80),
    ) {
        let mut t = task(7, max_attempts);
        for (i, event) in events.into_iter().enumerate() {
            let before = t.clone();
            match t.apply(event, ts(i as u64)) {
                Ok(next) => {
                    prop_assert_eq!(Some(next), expected(before.status, event));
                    if before.is_settled() {
                        prop_assert!(before.status == S::Failed && event == E::Cancel,
                            "settled {:?} accepted {:?}", before.status, event);
                    }
                }
                Err(_) => prop_assert_eq!(&t, &before, "a rejected event changed the task"),
            }
            prop_assert!(t.attempt_number <= t.max_attempts);
            prop_assert!(S::ALL.contains(&t.status));
            if t.is_settled() {
                prop_assert!(t.completed_at.is_some());
            }
        }
    }
}

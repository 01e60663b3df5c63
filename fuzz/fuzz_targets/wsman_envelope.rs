//! Fuzz target: the WS-Management response parser (`deploy_exec::fuzzing::parse_envelope`) never panics on any bytes, and parses what the request builder writes.
//!
//! Raw inputs (seeded with the WinRM test fixtures) go to the parser as they
//! are; an input starting with 0xff is read as ids for a request envelope that
//! is built and must parse back with the same shell id.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use deploy_exec::fuzzing::{build_receive_envelope, parse_envelope};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Ids {
    shell_id: String,
    command_id: String,
}

/// Ids as servers hand them out (UUIDs, `winrs` numbers): printable ASCII, no surrounding space.
fn plain(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0xff, rest)) => {
            let Ok(ids) = Ids::arbitrary_take_rest(Unstructured::new(rest)) else {
                return;
            };
            if !plain(&ids.shell_id) || !plain(&ids.command_id) {
                return;
            }
            let xml = build_receive_envelope(&ids.shell_id, &ids.command_id);
            let parsed = parse_envelope(&xml).unwrap_or_else(|e| {
                panic!(
                    "a built envelope does not parse: {e}\n{}",
                    String::from_utf8_lossy(&xml)
                )
            });
            assert_eq!(parsed.shell_id.as_deref(), Some(ids.shell_id.as_str()));
            assert!(parsed.fault.is_none());
        }
        _ => {
            if let Ok(response) = parse_envelope(data) {
                // What a caller reads off a parsed response must not panic either.
                let _ = response.done();
                if let Some(fault) = &response.fault {
                    let _ = fault.summary();
                    let _ = fault.is_operation_timeout();
                }
            }
        }
    }
});

//! Fuzz target: `verify_lock` never panics on any bytes; a lock the renderer wrote verifies, and no mutation of its bytes verifies unless it leaves them identical.
//!
//! Input: raw bytes are handed to `verify_lock` as they are (seeded with real
//! locks); an input starting with 0xff is instead read as [`Rendered`]: a
//! template built from fuzzed environment values and labels is rendered, its
//! lock checked, then mutated byte by byte and checked again.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use deploy_artifacts::{parse_template, verify_lock};
use deploy_fuzz::{lock_of, render_template};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Rendered {
    services: Vec<Service>,
    seed: u64,
    mutations: Vec<Mutation>,
}

#[derive(Debug, Arbitrary)]
struct Service {
    component: u8,
    environment: Vec<(String, String)>,
    labels: Vec<(String, String)>,
}

#[derive(Debug, Arbitrary)]
enum Mutation {
    Set { at: u16, byte: u8 },
    Insert { at: u16, byte: u8 },
    Remove { at: u16 },
    Swap { a: u16, b: u16 },
    Truncate { len: u16 },
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let at = |i: u16| usize::from(i) % bytes.len();
        match *self {
            Self::Set { at: i, byte } => {
                let i = at(i);
                bytes[i] = byte;
            }
            Self::Insert { at: i, byte } => {
                let i = at(i);
                bytes.insert(i, byte);
            }
            Self::Remove { at: i } => {
                let i = at(i);
                bytes.remove(i);
            }
            Self::Swap { a, b } => {
                let (a, b) = (at(a), at(b));
                bytes.swap(a, b);
            }
            Self::Truncate { len } => {
                let len = at(len);
                bytes.truncate(len);
            }
        }
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn template_text(services: &[Service]) -> String {
    let mut t = String::from("services:\n");
    for (i, svc) in services.iter().take(8).enumerate() {
        t.push_str(&format!(
            "  svc-{i}:\n    componentName: comp-{}\n",
            svc.component % 4
        ));
        for (section, entries) in [("environment", &svc.environment), ("labels", &svc.labels)] {
            if entries.is_empty() {
                continue;
            }
            t.push_str(&format!("    {section}:\n"));
            for (k, v) in entries.iter().take(8) {
                t.push_str(&format!("      {}: {}\n", quoted(k), quoted(v)));
            }
        }
    }
    t
}

fn rendered(input: &Rendered) {
    let text = template_text(&input.services);
    // Fuzzed keys and values are often refused (invalid env names, `$` interpolation, ...).
    let Ok(template) = parse_template(text.as_bytes()) else {
        return;
    };
    let bundle = render_template(&template, input.seed);
    let lock = lock_of(&bundle).as_bytes();
    let info = verify_lock(lock).unwrap_or_else(|e| {
        panic!(
            "a rendered lock does not verify: {e}\n{}",
            String::from_utf8_lossy(lock)
        )
    });
    assert_eq!(info.digest, bundle.lock_digest);

    let mut mutated = lock.to_vec();
    for m in &input.mutations {
        m.apply(&mut mutated);
        if let Ok(again) = verify_lock(&mutated) {
            assert_eq!(
                mutated.as_slice(),
                lock,
                "a changed lock verifies after {m:?}:\n{}",
                String::from_utf8_lossy(&mutated)
            );
            assert_eq!(again, info);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0xff, rest)) => {
            if let Ok(input) = Rendered::arbitrary_take_rest(Unstructured::new(rest)) {
                rendered(&input);
            }
        }
        _ => {
            if let Ok(info) = verify_lock(data) {
                assert_eq!(info.digest.len(), 64);
            }
        }
    }
});

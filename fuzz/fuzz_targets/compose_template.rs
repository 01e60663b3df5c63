//! Fuzz target: `parse_template` never panics and stays fast on any bytes (alias bombs, deep nesting, huge documents), and every template it accepts renders into a bundle whose lock verifies.
//!
//! libFuzzer's `-max_len` bounds the input (4 KiB by default, scripts/fuzz.sh
//! raises it to 64 KiB); the crate's own limits (`MAX_DOCUMENT_BYTES`,
//! `MAX_NODES`) are what keep expansion bounded, and a slow input is reported
//! by libFuzzer as a timeout.
#![no_main]

use deploy_artifacts::{parse_template, verify_lock};
use deploy_fuzz::{lock_of, render_template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(template) = parse_template(data) else {
        return;
    };
    assert!(!template.services.is_empty());
    assert!(
        template.services.windows(2).all(|w| w[0].name < w[1].name),
        "services are sorted and unique"
    );
    let bundle = render_template(&template, data.len() as u64);
    let lock = lock_of(&bundle);
    let info = verify_lock(lock.as_bytes())
        .unwrap_or_else(|e| panic!("the rendered lock does not verify: {e}\n{lock}"));
    assert_eq!(info.digest, bundle.lock_digest);
    assert_eq!(info.services.len(), template.services.len());
});

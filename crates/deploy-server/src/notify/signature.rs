//! The `X-Deploy-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<id>.<event>.<body>">` under the subscription's key (id and event are the `X-Deploy-Delivery` and `X-Deploy-Event` headers, so a receiver may trust them too), and its check as a receiver does it.

use aws_lc_rs::{constant_time, hmac};

/// The header value for delivery `id` of `event` with `body`, sent at `unix_seconds`
/// under `key`.
pub fn sign(key: &[u8], unix_seconds: u64, id: &str, event: &str, body: &[u8]) -> String {
    format!(
        "t={unix_seconds},v1={}",
        hex(&mac(key, unix_seconds, id, event, body))
    )
}

/// What a receiver checks: `header` is well formed, its `v1` is the HMAC of
/// `"<t>.<id>.<event>.<body>"` under `key`, and `t` is at most `window_secs` away from
/// `now_secs` (an older one is a replay). Comparison in constant time.
pub fn verify(
    key: &[u8],
    header: &str,
    (id, event): (&str, &str),
    body: &[u8],
    (now_secs, window_secs): (u64, u64),
) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if now_secs.abs_diff(t) > window_secs {
        return false;
    }
    let expected = hex(&mac(key, t, id, event, body));
    constant_time::verify_slices_are_equal(expected.as_bytes(), v1.as_bytes()).is_ok()
}

fn mac(key: &[u8], unix_seconds: u64, id: &str, event: &str, body: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    // Neither the id (a UUID) nor the event name holds a `.`: the split is unambiguous.
    for part in [
        unix_seconds.to_string().as_bytes(),
        id.as_bytes(),
        event.as_bytes(),
    ] {
        ctx.update(part);
        ctx.update(b".");
    }
    ctx.update(body);
    ctx.sign().as_ref().to_vec()
}

use deploy_core::hex::lower_hex as hex;

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0190d6a0-0000-7000-8000-000000000001";

    #[test]
    fn the_signature_is_the_hmac_sha256_of_timestamp_id_event_body() {
        // The signed text is "<t>.<id>.<event>.<body>"; the HMAC itself is checked
        // against the widely published vector HMAC-SHA256("key", "The quick brown fox ...").
        let header = sign(b"key", 1_700_000_000, ID, "job.failed", b"{\"a\":1}");
        let (t, v1) = header.split_once(',').unwrap();
        assert_eq!(t, "t=1700000000");
        assert_eq!(v1.len(), "v1=".len() + 64);
        let direct = {
            let key = hmac::Key::new(hmac::HMAC_SHA256, b"key");
            let text = format!("1700000000.{ID}.job.failed.{{\"a\":1}}");
            hex(hmac::sign(&key, text.as_bytes()).as_ref())
        };
        assert_eq!(v1, format!("v1={direct}"));
        // The same as the receiver example of docs/operations.md computes (Python's hmac).
        assert_eq!(
            header,
            "t=1700000000,v1=690fe77f633070d82e4502d513b73a4742a8949f9d2e0e13e2720c032c384ed4"
        );
        let fox = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"key"),
            b"The quick brown fox jumps over the lazy dog",
        );
        assert_eq!(
            hex(fox.as_ref()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn verification_refuses_other_keys_ids_events_bodies_and_stale_or_malformed_headers() {
        let body = b"{\"event\":\"job.completed\"}";
        let sent = (ID, "job.completed");
        let header = sign(b"k1", 1_000, ID, "job.completed", body);
        assert!(verify(b"k1", &header, sent, body, (1_000, 300)));
        assert!(verify(b"k1", &header, sent, body, (1_300, 300)));
        assert!(
            !verify(b"k1", &header, sent, body, (1_301, 300)),
            "replayed after the window"
        );
        assert!(
            !verify(b"k2", &header, sent, body, (1_000, 300)),
            "another key"
        );
        assert!(
            !verify(b"k1", &header, sent, b"{}", (1_000, 300)),
            "another body"
        );
        let other_id = ("0190d6a0-0000-7000-8000-000000000002", "job.completed");
        assert!(
            !verify(b"k1", &header, other_id, body, (1_000, 300)),
            "id is signed"
        );
        let other_event = (ID, "job.failed");
        assert!(
            !verify(b"k1", &header, other_event, body, (1_000, 300)),
            "event is signed"
        );
        let other_time = header.replace("t=1000", "t=1001");
        assert!(
            !verify(b"k1", &other_time, sent, body, (1_000, 300)),
            "t is signed"
        );
        for bad in ["", "t=1000", "v1=00", "t=x,v1=00", "garbage"] {
            assert!(!verify(b"k1", bad, sent, body, (1_000, 300)), "{bad}");
        }
    }
}

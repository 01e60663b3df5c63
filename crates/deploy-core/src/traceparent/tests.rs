//! Table tests and property tests of `Traceparent::parse` and its round trip.

use super::*;

const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_w3c_example_parses_and_prints_back() {
    let tp = Traceparent::parse(GOOD).unwrap();
    assert_eq!(tp.trace_id[0], 0x4b);
    assert_eq!(tp.span_id[7], 0xb7);
    assert!(tp.sampled());
    assert_eq!(tp.to_string(), GOOD);
    let unsampled = Traceparent::parse(&GOOD.replace("-01", "-00")).unwrap();
    assert!(!unsampled.sampled());
}

#[test]
fn a_later_version_is_read_by_its_first_four_fields() {
    let tp = Traceparent::parse(&format!("cc{}-what-comes-next", &GOOD[2..])).unwrap();
    assert_eq!(tp.to_string(), GOOD);
}

#[test]
fn bad_values_are_refused_naming_what_was_expected() {
    let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let zero_span = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
    let cases = [
        ("", "four fields"),
        ("garbage", "four fields"),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "four fields",
        ),
        (&GOOD.replacen("00", "ff", 1), "version `ff`"),
        (&GOOD.replacen("00", "0g", 1), "2-digit hex version"),
        (&format!("{GOOD}-extra"), "exactly four fields"),
        (
            &GOOD.replace("4bf9", "4BF9"),
            "trace id of 32 lowercase hex",
        ),
        (&GOOD.replace("4bf9", "4bf"), "trace id of 32 lowercase hex"),
        (zero_trace, "not all zero"),
        (
            zero_span,
            "parent id of 16 lowercase hex digits, not all zero",
        ),
        (&GOOD.replace("-01", "-1"), "2-digit hex flags"),
        (&GOOD.replace("-01", "-zz"), "2-digit hex flags"),
    ];
    for (value, expected) in cases {
        let e = Traceparent::parse(value).unwrap_err().to_string();
        assert!(e.contains(expected), "{value:?}: {e}");
        assert!(
            e.contains(&value.chars().take(64).collect::<String>()),
            "{e}"
        );
    }
}

#[test]
fn a_long_value_is_cut_in_the_error() {
    let long = "x".repeat(10_000);
    let e = Traceparent::parse(&long).unwrap_err();
    assert_eq!(e.value.len(), 64);
}

#[test]
fn flags_other_than_sampled_are_not_kept() {
    let tp = Traceparent::parse(&GOOD.replace("-01", "-ff")).unwrap();
    assert_eq!(tp.flags, 0x01);
    assert_eq!(tp.to_string(), GOOD);
    let later = Traceparent::parse(&format!("cc{}-more", &GOOD[2..].replace("-01", "-02")));
    assert_eq!(later.unwrap().flags, 0x00);
}

proptest::proptest! {
    /// Any text: parsing never panics, and what parses prints as a value that parses
    /// back to the same.
    #[test]
    fn parsing_never_panics_and_round_trips(value in "\\PC{0,80}") {
        if let Ok(tp) = Traceparent::parse(&value) {
            proptest::prop_assert_eq!(Traceparent::parse(&tp.to_string()), Ok(tp));
        }
    }

    /// Every well-formed value parses and prints back as given (flags 00 or 01).
    #[test]
    fn well_formed_values_round_trip(
        trace in "[0-9a-f]{32}",
        span in "[0-9a-f]{16}",
        sampled in proptest::bool::ANY,
    ) {
        proptest::prop_assume!(trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0'));
        let value = format!("00-{trace}-{span}-0{}", u8::from(sampled));
        let tp = Traceparent::parse(&value).unwrap();
        proptest::prop_assert_eq!(tp.sampled(), sampled);
        proptest::prop_assert_eq!(tp.to_string(), value);
    }
}

//! Fuzz target: deploy-core's validated strings (`Digest`, `ImageRef`, `Name`, `UnixPath`, `CommandSpec`) never panic, and what parses prints and re-parses to an equal value.
//!
//! Input: any bytes. As UTF-8 (lossily) the whole input is each parser's
//! input; split at NUL-free `\n`s it is also a `CommandSpec` argv.
#![no_main]

use deploy_core::{CommandSpec, Digest, ImageRef, Name, UnixPath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.as_str(), s, "a digest has one spelling");
        assert_eq!(Digest::parse(d.as_str()).as_ref(), Ok(&d));
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.short(), &d.hex()[..12]);
        let json = serde_json::to_string(&d).expect("a digest serialises");
        assert_eq!(serde_json::from_str::<Digest>(&json).ok(), Some(d));
    }

    if let Ok(r) = ImageRef::parse(s) {
        let canonical = r.to_string();
        let again = ImageRef::parse(&canonical).unwrap_or_else(|e| {
            panic!("canonical form {canonical:?} of {s:?} does not parse: {e}")
        });
        assert_eq!(again, r, "{s:?} -> {canonical:?}");
        assert_eq!(
            again.to_string(),
            canonical,
            "the canonical form is a fixed point"
        );
        let rebuilt = ImageRef::from_parts(&r.repository(), r.digest())
            .unwrap_or_else(|e| panic!("from_parts of {canonical:?}: {e}"));
        assert_eq!(rebuilt, r);
        let json = serde_json::to_string(&r).expect("a reference serialises");
        assert_eq!(serde_json::from_str::<ImageRef>(&json).ok(), Some(r));
    }

    if let Ok(n) = Name::parse(s) {
        assert_eq!(n.as_str(), s);
        assert!(
            !n.as_str()
                .contains(['/', ' ', ';', '$', '`', '\'', '"', '\n'])
        );
        assert!(n.as_str() != "." && n.as_str() != "..");
        assert_eq!(Name::parse(n.as_str()).as_ref(), Ok(&n));
    }

    if let Ok(p) = UnixPath::parse(s) {
        assert_eq!(p.as_str(), s);
        assert!(
            !p.as_str().split('/').any(|c| c == ".."),
            "{s:?} climbs out"
        );
        // Joining a name keeps a path valid, or is refused when the result is too long.
        match p.join(&Name::parse("file").expect("valid")) {
            Ok(joined) => {
                let again = UnixPath::parse(joined.as_str());
                assert_eq!(
                    again.as_ref(),
                    Ok(&joined),
                    "joining a name keeps a path valid"
                );
            }
            Err(e) => assert!(p.as_str().len() + "/file".len() > 1024, "{s:?}: {e}"),
        }
    }

    let argv: Vec<String> = s.split('\n').map(str::to_owned).collect();
    if let Ok(c) = CommandSpec::new(argv.clone()) {
        assert_eq!(c.argv(), argv.as_slice());
        let json = serde_json::to_string(&c).expect("a command serialises");
        assert_eq!(serde_json::from_str::<CommandSpec>(&json).ok(), Some(c));
    }
});

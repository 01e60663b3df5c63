//! `Digest`: a content digest in OCI form, exactly `sha256:` followed by 64 lowercase hex characters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::errors::DigestError;

const PREFIX: &str = "sha256:";
const HEX_LEN: usize = 64;

/// A sha256 content digest such as `sha256:9f86d0…`.
///
/// Only sha256 is accepted: it is what registries, Compose and our own
/// artifacts use, and accepting more algorithms would give one image two
/// identities. Upper-case hex is rejected rather than normalised so that a
/// digest has exactly one spelling.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        validate(value)?;
        Ok(Self(value.to_owned()))
    }

    /// Builds the digest of raw sha256 output.
    pub fn from_sha256(bytes: [u8; 32]) -> Self {
        Self(format!("{PREFIX}{}", crate::hex::lower_hex(&bytes)))
    }

    /// The whole digest, `sha256:…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex characters without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The first 12 hex characters, as `docker` shows short ids.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

fn validate(value: &str) -> Result<(), DigestError> {
    let Some(hex) = value.strip_prefix(PREFIX) else {
        return Err(match value.split_once(':') {
            Some((algorithm, _)) => DigestError::UnsupportedAlgorithm {
                value: value.to_owned(),
                algorithm: algorithm.to_owned(),
            },
            None => DigestError::MissingPrefix {
                value: value.to_owned(),
            },
        });
    };
    for (i, c) in hex.chars().enumerate() {
        if !(c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            return Err(DigestError::InvalidChar {
                value: value.to_owned(),
                found: c,
                position: PREFIX.len() + i,
            });
        }
    }
    if hex.len() != HEX_LEN {
        return Err(DigestError::WrongLength {
            value: value.to_owned(),
            len: hex.len(),
        });
    }
    Ok(())
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        validate(&value)?;
        Ok(Self(value))
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn check(input: &str, expected: Result<(), &str>) {
        let got = Digest::parse(input).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned), "input {input:?}");
    }

    #[test]
    fn parses_a_valid_digest_and_exposes_its_parts() {
        let d = Digest::parse(GOOD).unwrap();
        assert_eq!(d.as_str(), GOOD);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        check(
            "e3b0c44298fc",
            Err(
                "digest `e3b0c44298fc` has no algorithm prefix; expected `sha256:` followed by 64 lowercase hex characters",
            ),
        );
        check(
            "sha512:abcd",
            Err("digest `sha512:abcd` uses algorithm `sha512`; expected `sha256`"),
        );
        check(
            "sha256:abc",
            Err("digest `sha256:abc` has 3 hex characters; expected 64"),
        );
        let upper = GOOD.replace('e', "E");
        check(
            &upper,
            Err(&format!(
                "digest `{upper}` has `E` at position 7; expected a lowercase hex character (0-9, a-f)"
            )),
        );
        check(
            &format!("{GOOD}0"),
            Err(&format!(
                "digest `{GOOD}0` has 65 hex characters; expected 64"
            )),
        );
    }

    #[test]
    fn from_sha256_round_trips_through_parse() {
        let d = Digest::from_sha256([0xab; 32]);
        assert_eq!(d.hex(), "ab".repeat(32));
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
    }

    #[test]
    fn serde_is_a_plain_string_and_validates() {
        let d: Digest = serde_json::from_str(&format!("\"{GOOD}\"")).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{GOOD}\""));
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}

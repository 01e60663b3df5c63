//! `SecretRef`: an environment value of the form `secret:NAME`, naming an application secret held by deployd.

use std::collections::BTreeMap;

use crate::errors::NameError;
use crate::name::Name;

/// What makes an environment value a reference.
pub const SECRET_REF_PREFIX: &str = "secret:";

/// A reference to an application secret: the value `secret:NAME`, `NAME` a [`Name`].
///
/// Any value that starts with `secret:` is a reference (there is no escape): a value
/// meant as a literal would otherwise travel as the literal when a typo breaks the
/// name, so such a value is refused instead of passed on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef(Name);

impl SecretRef {
    /// `Ok(None)` for a literal value, `Ok(Some)` for `secret:NAME`, and the name's
    /// error for a value that starts with `secret:` without a valid name after it.
    pub fn parse(value: &str) -> Result<Option<Self>, NameError> {
        match value.strip_prefix(SECRET_REF_PREFIX) {
            None => Ok(None),
            Some(name) => Name::parse(name).map(|n| Some(Self(n))),
        }
    }

    /// A reference to `name`.
    pub fn to(name: Name) -> Self {
        Self(name)
    }

    /// The secret's name.
    pub fn name(&self) -> &Name {
        &self.0
    }

    /// The reference as written in an environment value.
    pub fn to_value(&self) -> String {
        format!("{SECRET_REF_PREFIX}{}", self.0)
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SECRET_REF_PREFIX}{}", self.0)
    }
}

/// The references among `env`'s values, by variable name. A value starting with
/// `secret:` whose name is invalid is the variable's name and the name's error.
pub fn secret_refs(
    env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, SecretRef>, (String, NameError)> {
    let mut refs = BTreeMap::new();
    for (key, value) in env {
        if let Some(r) = SecretRef::parse(value).map_err(|e| (key.clone(), e))? {
            refs.insert(key.clone(), r);
        }
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: Result<Option<&str>, ()>) {
        let got = SecretRef::parse(value);
        match expected {
            Ok(name) => assert_eq!(
                got.unwrap().map(|r| r.name().to_string()),
                name.map(str::to_owned),
                "{value}"
            ),
            Err(()) => assert!(got.is_err(), "{value}: {got:?}"),
        }
    }

    #[test]
    fn the_grammar_is_the_prefix_and_a_name() {
        check("plain", Ok(None));
        check("", Ok(None));
        check("Secret:db", Ok(None));
        check(" secret:db", Ok(None));
        check("secret:db-password", Ok(Some("db-password")));
        check("secret:a.b_c-1", Ok(Some("a.b_c-1")));
        check("secret:", Err(()));
        check("secret:DB", Err(()));
        check("secret:db password", Err(()));
        check("secret:../etc", Err(()));
        check("secret:db:1", Err(()));
        let r = SecretRef::parse("secret:db").unwrap().unwrap();
        assert_eq!(r.to_value(), "secret:db");
        assert_eq!(r.to_string(), "secret:db");
    }

    #[test]
    fn refs_are_found_by_variable_and_a_bad_one_names_it() {
        let env: BTreeMap<String, String> = [
            ("A".to_owned(), "1".to_owned()),
            ("DB".to_owned(), "secret:db".to_owned()),
        ]
        .into();
        let refs = secret_refs(&env).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs["DB"].name().as_str(), "db");
        let bad: BTreeMap<String, String> = [("X".to_owned(), "secret:Nope".to_owned())].into();
        assert_eq!(secret_refs(&bad).unwrap_err().0, "X");
    }
}

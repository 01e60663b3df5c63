//! Secret references (`secret:NAME`) in env values: kept as written in every artifact, a bad one refused by its variable.

use super::fixtures::Inputs;
use crate::{ArtifactError, LOCK_FILE_NAME, render};

const TEMPLATE: &str = "services:\n  app:\n    componentName: web\n    environment:\n      DB_PASSWORD: secret:db-password\n      PLAIN: hello\n      TOKEN:\n";

#[test]
fn a_reference_stays_a_reference_and_the_digest_covers_it() {
    let mut inputs = Inputs::new(TEMPLATE);
    inputs
        .variables
        .insert("TOKEN".to_owned(), "secret:api-token".to_owned());
    let bundle = inputs.render();
    let lock = &bundle.get(LOCK_FILE_NAME).unwrap().content;
    assert!(lock.contains("secret:db-password"), "{lock}");
    assert!(lock.contains("secret:api-token"), "{lock}");
    // Another secret name is another lock (and bundle): the reference is what is deployed.
    let mut other = Inputs::new(TEMPLATE);
    other
        .variables
        .insert("TOKEN".to_owned(), "secret:other-token".to_owned());
    assert_ne!(other.render().lock_digest, bundle.lock_digest);
}

#[test]
fn a_bad_reference_names_its_variable_and_not_its_text() {
    for bad in ["secret:", "secret:Upper", "secret:a b", "secret:x/../y"] {
        let mut inputs = Inputs::new(TEMPLATE);
        inputs.variables.insert("TOKEN".to_owned(), bad.to_owned());
        let err = render(&inputs.input()).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ArtifactError::Invalid { .. }),
            "{bad}: {text}"
        );
        assert!(text.contains("services.app.environment.TOKEN"), "{text}");
        let rest = bad.trim_start_matches("secret:");
        assert!(rest.is_empty() || !text.contains(rest), "{text}");
    }
}

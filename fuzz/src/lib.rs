//! Helpers shared by the fuzz targets: rendering a parsed template with a release that has exactly its components.

use std::collections::BTreeSet;

use deploy_artifacts::{
    Bundle, Colour, ComposeTemplate, ContainerRuntime, LOCK_FILE_NAME, RenderInput, Traffic, render,
};
use deploy_core::testing::{
    component_id, digest, job_id, name, promotion_id, release_id, ssh_target, ts,
};
use deploy_core::{Component, ImageRef, Release, UnixPath};

/// Renders `template` for target `host-1` with a release `r1` whose components are
/// exactly those the template names (images `registry.example:5000/<component>`).
///
/// Every template that parses must render: a render error here is a finding.
pub fn render_template(template: &ComposeTemplate, seed: u64) -> Bundle {
    let names: BTreeSet<_> = template.services.iter().map(|s| &s.component).collect();
    let components = names
        .into_iter()
        .zip(1u64..)
        .map(|(n, i)| Component {
            id: component_id(i),
            name: n.clone(),
            image: ImageRef::from_parts(
                &format!("registry.example:5000/image-{i}"),
                &digest(seed.wrapping_add(i)),
            )
            .expect("a valid repository"),
        })
        .collect();
    let release = Release::new(release_id(1), name("r1"), components, ts(0))
        .expect("component names and ids are unique");
    let target = ssh_target(1);
    let environment = name("prod");
    let work_dir = UnixPath::parse("/srv/deploy").expect("valid");
    let input = RenderInput {
        release: &release,
        target: &target,
        environment: &environment,
        promotion_id: promotion_id(7),
        job_id: job_id(3),
        timestamp: ts(seed % 1_000_000_000),
        template,
        traffic: Traffic {
            live: if seed.is_multiple_of(2) {
                Colour::Blue
            } else {
                Colour::Green
            },
            canary: None,
        },
        runtime: ContainerRuntime::Docker,
        work_dir: &work_dir,
    };
    render(&input).unwrap_or_else(|e| panic!("a parsed template does not render: {e}"))
}

/// The lock of a rendered bundle.
pub fn lock_of(bundle: &Bundle) -> &str {
    &bundle
        .get(LOCK_FILE_NAME)
        .expect("every bundle has a lock")
        .content
}

//! `Release` and its `Component`s: the set of images, each pinned by digest, that a promotion deploys.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::errors::{UnknownComponent, ValidationError};
use crate::ids::{ComponentId, ReleaseId};
use crate::image_ref::ImageRef;
use crate::name::Name;
use crate::timestamp::Timestamp;

/// One deployable unit of a release: a named image pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub id: ComponentId,
    pub name: Name,
    pub image: ImageRef,
}

impl Component {
    /// The digest that identifies this component's image.
    pub fn digest(&self) -> &Digest {
        self.image.digest()
    }
}

/// An immutable set of component images, and how they run: its service definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub id: ReleaseId,
    pub name: Name,
    pub components: Vec<Component>,
    /// The service definition (a compose template) every deploy of the release
    /// renders; `None`: each component runs its image's own command, nothing declared.
    #[serde(default)]
    pub template: Option<ServiceTemplate>,
    pub created_at: Timestamp,
    /// Set once archived: it can no longer be promoted (jobs and rollbacks that ran it
    /// stay as they are).
    #[serde(default)]
    pub archived_at: Option<Timestamp>,
}

/// A release's service definition: compose template text (checked by deploy-artifacts
/// when the release is created), addressed by its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTemplate {
    pub content: String,
    /// sha256 of `content`.
    pub sha256: Digest,
}

impl ServiceTemplate {
    /// The template `content`, with its digest computed from it.
    pub fn new(content: String) -> Self {
        let sha256 = crate::artifact::sha256_of(content.as_bytes());
        Self { content, sha256 }
    }

    /// Checks that the digest still describes the content (after loading it).
    pub fn verify(&self) -> Result<(), ValidationError> {
        let actual = crate::artifact::sha256_of(self.content.as_bytes());
        if actual == self.sha256 {
            Ok(())
        } else {
            Err(ValidationError::new(
                "release.template.sha256",
                &self.sha256,
                format!("{actual}, the digest of its content"),
            ))
        }
    }
}

impl Release {
    /// Builds a release, checking that it has components with unique names and ids.
    pub fn new(
        id: ReleaseId,
        name: Name,
        components: Vec<Component>,
        created_at: Timestamp,
    ) -> Result<Self, ValidationError> {
        let release = Self {
            id,
            name,
            components,
            template: None,
            created_at,
            archived_at: None,
        };
        release.validate()?;
        Ok(release)
    }

    /// The same release with `template` as its service definition.
    pub fn with_template(mut self, template: Option<ServiceTemplate>) -> Self {
        self.template = template;
        self
    }

    /// Checks the rules that span fields.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(t) = &self.template {
            t.verify()?;
        }
        if self.components.is_empty() {
            return Err(ValidationError::new(
                "release.components",
                "[]",
                "at least one component",
            ));
        }
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for c in &self.components {
            if !names.insert(&c.name) {
                return Err(ValidationError::new(
                    "release.components.name",
                    &c.name,
                    "each component name once",
                ));
            }
            if !ids.insert(c.id) {
                return Err(ValidationError::new(
                    "release.components.id",
                    c.id,
                    "each component id once",
                ));
            }
        }
        Ok(())
    }

    /// The component called `name`, or an error listing the available ones.
    pub fn component(&self, name: &str) -> Result<&Component, UnknownComponent> {
        self.components
            .iter()
            .find(|c| c.name.as_str() == name)
            .ok_or_else(|| UnknownComponent {
                component: name.to_owned(),
                release: self.name.to_string(),
                available: self.components.iter().map(|c| c.name.to_string()).collect(),
            })
    }

    /// The component with id `id`, if any.
    pub fn component_by_id(&self, id: ComponentId) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn lookup_by_name_lists_what_exists() {
        let r = release(&["web", "worker"]);
        assert_eq!(r.component("web").unwrap().name.as_str(), "web");
        assert_eq!(
            r.component("api").unwrap_err().to_string(),
            "component `api` is not in release `r1`; available: web, worker"
        );
        let id = r.components[1].id;
        assert_eq!(r.component_by_id(id).unwrap().name.as_str(), "worker");
    }

    #[test]
    fn rejects_empty_and_duplicate_components() {
        let r = release(&["web"]);
        assert!(Release::new(r.id, r.name.clone(), vec![], r.created_at).is_err());
        let mut dup = r.components.clone();
        dup.push(Component {
            id: component_id(99),
            ..r.components[0].clone()
        });
        let err = Release::new(r.id, r.name.clone(), dup, r.created_at).unwrap_err();
        assert_eq!(
            err.to_string(),
            "release.components.name is `web`; expected each component name once"
        );
    }
}

//! Typed identifiers: one UUID v7 newtype per entity, so a job id can never be passed where a task id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::errors::IdError;
use crate::timestamp::Timestamp;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $entity:literal) => {
        $(#[$doc])*
        ///
        /// A UUID version 7: time-ordered, so ids sort by creation time and
        /// index well. Core never reads the clock or a random source; the
        /// caller passes both to [`Self::from_parts`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "Uuid", into = "Uuid")]
        pub struct $name(Uuid);

        impl $name {
            /// The entity name used in error messages.
            pub const ENTITY: &'static str = $entity;

            /// Builds a v7 id from its creation time and 10 random bytes.
            pub fn from_parts(created: Timestamp, random: [u8; 10]) -> Self {
                Self(uuid::Builder::from_unix_timestamp_millis(created.unix_millis(), &random).into_uuid())
            }

            /// Wraps an existing UUID, which must be version 7.
            pub fn from_uuid(uuid: Uuid) -> Result<Self, IdError> {
                match uuid.get_version_num() {
                    7 => Ok(Self(uuid)),
                    version => Err(IdError::WrongVersion { entity: $entity, value: uuid.to_string(), version }),
                }
            }

            /// Parses the hyphenated text form.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                let uuid = Uuid::try_parse(value).map_err(|_| IdError::Malformed {
                    entity: $entity,
                    value: value.to_owned(),
                })?;
                Self::from_uuid(uuid)
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl TryFrom<Uuid> for $name {
            type Error = IdError;
            fn try_from(uuid: Uuid) -> Result<Self, Self::Error> {
                Self::from_uuid(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

typed_id!(
    /// Identifies a [`crate::DeploymentJob`].
    JobId, "job"
);
typed_id!(
    /// Identifies a [`crate::DeploymentTask`].
    TaskId, "task"
);
typed_id!(
    /// Identifies a [`crate::Promotion`].
    PromotionId, "promotion"
);
typed_id!(
    /// Identifies a [`crate::Release`].
    ReleaseId, "release"
);
typed_id!(
    /// Identifies an [`crate::Environment`].
    EnvironmentId, "environment"
);
typed_id!(
    /// Identifies a [`crate::Target`].
    TargetId, "target"
);
typed_id!(
    /// Identifies a [`crate::Component`] of a release.
    ComponentId, "component"
);
typed_id!(
    /// Identifies a registered agent.
    AgentId, "agent"
);
typed_id!(
    /// Identifies a [`crate::GeneratedArtifact`].
    ArtifactId, "artifact"
);
typed_id!(
    /// Identifies a webhook notification subscription of an environment.
    SubscriptionId, "notification subscription"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_parts_is_v7_deterministic_and_time_ordered() {
        let t1 = Timestamp::from_unix_millis(1_700_000_000_000).unwrap();
        let t2 = Timestamp::from_unix_millis(1_700_000_000_001).unwrap();
        let a = JobId::from_parts(t1, [0xff; 10]);
        assert_eq!(a, JobId::from_parts(t1, [0xff; 10]));
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(
            JobId::from_parts(t2, [0; 10]) > a,
            "a later id sorts after an earlier one"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_other_versions() {
        let id = TaskId::from_parts(Timestamp::from_unix_millis(1).unwrap(), [7; 10]);
        assert_eq!(TaskId::parse(&id.to_string()).unwrap(), id);
        let v4 = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
        assert_eq!(
            TaskId::parse(v4).unwrap_err().to_string(),
            format!("task id `{v4}` is a version 4 UUID; expected version 7")
        );
        assert_eq!(
            JobId::parse("not-a-uuid").unwrap_err().to_string(),
            "job id `not-a-uuid` is not a UUID; expected the hyphenated form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
        );
    }

    #[test]
    fn serde_validates_the_version() {
        let id = JobId::from_parts(Timestamp::from_unix_millis(5).unwrap(), [1; 10]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<JobId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<JobId>("\"f47ac10b-58cc-4372-a567-0e02b2c3d479\"").is_err());
    }
}

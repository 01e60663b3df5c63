//! Kubernetes against a deterministic fake.

//! Fault scenario `replicas` (to be written).

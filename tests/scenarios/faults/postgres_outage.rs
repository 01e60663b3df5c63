//! Fault scenario `postgres_outage` (to be written).

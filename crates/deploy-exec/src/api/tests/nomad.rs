//! Nomad against a fake following the Nomad HTTP API documentation.

//! Real tools.

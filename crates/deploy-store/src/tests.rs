//! Tests of the store on both backends.

//! Fault scenario `kill_deployd` (to be written).

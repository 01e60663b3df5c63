//! Fault scenario `disk_full` (to be written).

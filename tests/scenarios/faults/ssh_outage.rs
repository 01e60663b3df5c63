//! Fault scenario `ssh_outage` (to be written).

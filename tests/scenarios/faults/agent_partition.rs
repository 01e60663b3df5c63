//! Fault scenario `agent_partition` (to be written).

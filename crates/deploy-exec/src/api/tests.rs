//! Tests of the API executors: deterministic fakes per platform, and the real emulators (moto_server, kmock).

mod ecs;
mod emulators;
mod fake;
mod k8s;
mod nomad;

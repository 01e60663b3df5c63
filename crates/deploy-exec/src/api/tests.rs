//! Tests of the API executors: deterministic fakes per platform, and the real emulators (moto_server, kmock).

mod aws_chain;
mod ecs;
mod emulators;
mod fake;
mod k8s;
mod k8s_nomad_auth;
mod nomad;

//! The real emulators: moto_server for ECS and kmock for Kubernetes, started on free loopback ports.

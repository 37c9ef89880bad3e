//! workload-identity-webhook: a mutating admission webhook that gives Pods AWS, Google Cloud and
//! Azure workload identities.
//!
//! The pure core ([`model`], [`config`], [`providers`], [`mutation`], [`patch`], [`admission`]) turns an
//! admission request into a patch without I/O. The shell ([`server`], [`watch`], [`tls`],
//! [`metrics`]) serves it over HTTPS and keeps its inputs current.

pub mod admission;
pub mod config;
pub mod echo;
pub mod model;
pub mod mutation;
pub mod patch;
pub mod providers;
pub mod validate;

pub mod certificates;
pub mod cli;
pub mod connections;
#[cfg(test)]
mod core_tests;
pub mod emulate;
pub mod metrics;
pub mod offline;
pub mod server;
pub mod tls;
pub mod watch;

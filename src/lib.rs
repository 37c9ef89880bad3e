//! workload-identity-webhook: a mutating admission webhook that gives Pods AWS, Google Cloud and
//! Azure workload identities.
//!
//! The folders say what the code is, and imports point down this list:
//! - [`cli`]: the commands (`serve` flags, `mutate` offline preview, `explain` of a cluster's Pods).
//! - [`shell`]: serving over HTTPS and keeping the inputs current (server, connections, watches,
//!   TLS, the managed certificate, metrics).
//! - [`core`]: the pure core that turns an admission request into a patch without I/O (model,
//!   config, mutation, patch, validation, the admission envelope).
//! - [`providers`]: one module per cloud, used by [`core::config`] and [`core::mutation`]; it reads
//!   only the core's data types ([`core::model`], [`core::validate`], [`core::echo`]), so there
//!   is no cycle between files.
//!
//! [`emulate`] is a separate command (local token services) that uses only parts of [`shell`]
//! (connections, log flags, the self-signed certificate).

pub mod cli;
pub mod core;
pub mod emulate;
pub mod providers;
pub mod shell;

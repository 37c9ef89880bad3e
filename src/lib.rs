//! workload-identity-webhook: the shell around [`workload_identity_core`], the pure core that turns
//! an admission request into a patch.
//!
//! - [`cli`]: the commands (`serve` flags, `mutate` offline preview, `explain` of a cluster's Pods,
//!   `convert`); `explain`'s cluster reads are its own shell, [`cli::explain`].
//! - [`shell`]: serving over HTTPS and keeping the inputs current (server, connections, watches,
//!   TLS, the managed certificate, metrics, the supervisor). The token-service emulator
//!   (`crates/emulator`) builds on this module's public API; nothing here knows the emulator.

pub mod build_info;
pub mod cli;
pub mod shell;

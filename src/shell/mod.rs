//! The shell: serves the core over HTTPS and keeps its inputs (configuration, ServiceAccounts,
//! certificates) current. Its public API is also what the emulator (`crates/emulator`) builds on:
//! [`connections`], [`tls`], [`certificates`], [`logging`], [`supervisor`], [`allocator`].

#[cfg(target_os = "linux")]
pub mod allocator;
pub mod certificates;
pub mod connections;
pub mod duration;
pub mod issuer;
pub mod logging;
pub mod metrics;
pub mod namespaces;
pub mod process_metrics;
pub mod server;
pub mod supervisor;
pub mod tls;
pub mod watch;

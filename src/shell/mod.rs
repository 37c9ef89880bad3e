//! The shell: serves the core over HTTPS and keeps its inputs (configuration, ServiceAccounts,
//! certificates) current.

pub mod certificates;
pub mod connections;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod supervisor;
pub mod tls;
pub mod watch;

//! The log flags and the log set-up, shared by the webhook and the emulator.

use anyhow::Context;
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "WIW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax (e.g. `info`, `workload_identity_webhook=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogArgs {
    /// Installs the process's log subscriber; a filter that does not parse is an error, not `info`.
    pub fn init(&self) -> anyhow::Result<()> {
        let filter =
            EnvFilter::try_new(&self.log_level).with_context(|| format!("--log-level {:?}", self.log_level))?;
        // Written in place, one write(2) per line: a writer thread (tracing-appender) cost more than it
        // saved on 2 cores, 65-67% of the no-parse ceiling over HTTP/1.1 against 81% without it.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            // Colour codes only for a terminal, never in files or log collectors.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Json => builder.json().flatten_event(true).init(),
            LogFormat::Text => builder.init(),
        }
        Ok(())
    }
}

//! The log flags and the log set-up, shared by the webhook and the emulator.

use anyhow::Context;
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Args, Debug)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "WIW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level: trace, debug, info, warn, error or off, optionally followed by
    /// `,TARGET=LEVEL` for one module (e.g. `info,workload_identity_webhook::shell::watch=debug`).
    /// Without it: $RUST_LOG, else info.
    #[arg(long, env = "WIW_LOG_LEVEL", value_name = "LEVEL", value_parser = parse_filter)]
    pub log_level: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The level names a filter may use.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// A log filter of level names, refused when any part is not one: tracing's own parser takes
/// an unknown word for a module name, which silently turns logging off.
pub fn parse_filter(text: &str) -> Result<String, String> {
    let level = |word: &str| LEVELS.contains(&word.trim().to_ascii_lowercase().as_str());
    for directive in text.split(',') {
        let valid = match directive.split_once('=') {
            Some((target, value)) => !target.trim().is_empty() && level(value),
            None => level(directive),
        };
        if !valid {
            return Err(format!(
                "{directive:?} is not a level ({}) or TARGET=LEVEL",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(text.to_owned())
}

impl LogArgs {
    /// Installs the process's log subscriber; a filter that does not parse is an error, not `info`.
    pub fn init(&self) -> anyhow::Result<()> {
        let text = match &self.log_level {
            Some(text) => text.clone(),
            None => match std::env::var("RUST_LOG") {
                Ok(text) => parse_filter(&text).map_err(anyhow::Error::msg).context("RUST_LOG")?,
                Err(_) => "info".to_owned(),
            },
        };
        let filter = EnvFilter::try_new(&text).with_context(|| format!("--log-level {text:?}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_names_levels_only() {
        for good in [
            "info",
            "WARN",
            "info,workload_identity_webhook::shell::watch=debug",
            "off",
        ] {
            assert_eq!(parse_filter(good).as_deref(), Ok(good));
        }
        for bad in ["verbose", "info,", "=debug", "info,kube=loud", ""] {
            let err = parse_filter(bad).unwrap_err();
            assert!(err.contains("trace, debug, info, warn, error, off"), "{bad}: {err}");
        }
    }
}

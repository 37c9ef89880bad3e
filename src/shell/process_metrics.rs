//! The standard `process_*` metrics (as Prometheus' Go and Python clients export them, which
//! dashboards and alerts of any exporter query), read from `/proc/self` at each scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What `/proc/self/stat` says of the process, in the metrics' units.
#[derive(Debug, PartialEq)]
pub struct ProcessStat {
    pub cpu_seconds: f64,
    pub start_time_seconds: f64,
    pub virtual_memory_bytes: f64,
    pub resident_memory_bytes: f64,
}

/// The kernel's clock and memory units, and when it booted: what turns `/proc/self/stat` into
/// seconds and bytes.
#[derive(Clone, Copy, Debug)]
pub struct Units {
    pub ticks_per_second: f64,
    pub page_size_bytes: f64,
    pub boot_time_seconds: f64,
}

/// Parses `/proc/self/stat` (proc(5)). The command name may hold spaces and parentheses, so the
/// fields are counted from its closing parenthesis.
pub fn parse_stat(stat: &str, units: Units) -> Option<ProcessStat> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3)?.parse::<f64>().ok();
    Some(ProcessStat {
        cpu_seconds: (field(14)? + field(15)?) / units.ticks_per_second,
        start_time_seconds: units.boot_time_seconds + field(22)? / units.ticks_per_second,
        virtual_memory_bytes: field(23)?,
        resident_memory_bytes: field(24)? * units.page_size_bytes,
    })
}

/// The `btime` line of `/proc/stat`: when the system booted, in Unix seconds.
pub fn parse_boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Registered once in the metrics registry (unprefixed); reads `/proc` when scraped.
#[derive(Debug)]
pub struct ProcessCollector {
    units: Option<Units>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        // SAFETY: sysconf only reads a system constant.
        let (ticks, page_size) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text));
        let units = boot_time.filter(|_| ticks > 0 && page_size > 0).map(|boot_time| Units {
            ticks_per_second: ticks as f64,
            page_size_bytes: page_size as f64,
            boot_time_seconds: boot_time,
        });
        ProcessCollector { units }
    }
}

fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Without /proc (not Linux) there is nothing to report.
        let stat = self.units.and_then(|units| {
            let text = std::fs::read_to_string("/proc/self/stat").ok()?;
            parse_stat(&text, units)
        });
        if let Some(stat) = stat {
            ConstCounter::new(stat.cpu_seconds).encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?)?;
            let start = "Start time of the process since unix epoch in seconds";
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                start,
                stat.start_time_seconds,
            )?;
            let virtual_memory = "Virtual memory size in bytes";
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                virtual_memory,
                stat.virtual_memory_bytes,
            )?;
            let resident = "Resident memory size in bytes";
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                resident,
                stat.resident_memory_bytes,
            )?;
        }
        if let Some(count) = open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                count as f64,
            )?;
        }
        if let Some(limit) = max_fds() {
            let help = "Maximum number of open file descriptors";
            gauge(&mut encoder, "process_max_fds", help, limit as f64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: Units = Units {
        ticks_per_second: 100.0,
        page_size_bytes: 4096.0,
        boot_time_seconds: 1_700_000_000.0,
    };

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis; utime 250, stime 50 ticks, started 1234.5 s
        // after boot, 10 MiB of address space, 300 resident pages.
        let stat = "4242 (web (x) 1) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 8 0 123450 10485760 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(stat, UNITS),
            Some(ProcessStat {
                cpu_seconds: 3.0,
                start_time_seconds: 1_700_001_234.5,
                virtual_memory_bytes: 10_485_760.0,
                resident_memory_bytes: 1_228_800.0,
            })
        );
    }

    #[test]
    fn a_truncated_stat_gives_nothing() {
        assert_eq!(parse_stat("4242 (web) S 1 4242", UNITS), None);
        assert_eq!(parse_stat("garbage", UNITS), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        let proc_stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1700000000\nprocesses 7\n";
        assert_eq!(parse_boot_time(proc_stat), Some(1_700_000_000.0));
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
    }
}

//! Durations on the command line, as Kubernetes and Prometheus users write them.

use std::time::Duration;

const EXPECTED: &str = "a duration such as 500ms, 5s, 2m or 1h";

/// `500ms`, `5s`, `2m`, `1h` (a bare number is seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let (number, unit) = trimmed.split_at(trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len()));
    let value: u64 = number.parse().map_err(|_| format!("{text:?} is not {EXPECTED}"))?;
    let seconds = |per_unit: u64| {
        value
            .checked_mul(per_unit)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" | "" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(format!("{text:?} is not {EXPECTED}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_from_milliseconds_to_hours() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse("soon").unwrap_err().contains("1h"));
        assert!(parse("3d").is_err());
        assert!(parse(&format!("{}h", u64::MAX)).unwrap_err().contains("too long"));
    }
}

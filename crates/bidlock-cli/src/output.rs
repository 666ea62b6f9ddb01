//! Writing results: human tables or one JSON document, quietly ending on a closed pipe.

use std::io::{self, Write};

use crate::exit::{self, CliError};

/// Writes `text` to stdout.
///
/// # Errors
///
/// A quiet [`CliError::broken_pipe`] when the reader went away (`bidlock locks | head`),
/// so the command stops and exits 0; another write error exits 1.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(CliError::broken_pipe()),
        Err(e) => Err(CliError::new(
            exit::FAILURE,
            format!("cannot write output: {e}"),
        )),
    }
}

/// Writes one JSON document and a newline.
///
/// # Errors
///
/// As [`print()`].
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(exit::FAILURE, format!("cannot encode JSON: {e}")))?;
    print(&format!("{s}\n"))
}

/// Milliseconds as a short human duration.
pub fn human_ms(ms: Option<u64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) if ms < 3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        Some(ms) => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// `x` with three significant digits (two decimals below 10, one below 100, none above).
fn sig3(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// A whole number with thousands separators: `85572` → `85,572`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration for people, rounded to three significant digits: `850 µs`, `1.24 ms`,
/// `2.35 s`, `1m05s`.
pub fn human_duration(d: std::time::Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 999.5 {
        format!("{} µs", sig3(us))
    } else if us < 999_500.0 {
        format!("{} ms", sig3(us / 1e3))
    } else if us < 59_500_000.0 {
        format!("{} s", sig3(us / 1e6))
    } else {
        let secs = d.as_secs_f64().round() as u64;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// A measured number for people: whole with thousands separators (`85,572`), three
/// significant digits below 100 (`4.25`).
pub fn human_number(x: f64) -> String {
    if !x.is_finite() || x < 0.0 {
        "-".to_owned()
    } else if x < 99.5 {
        sig3(x)
    } else {
        grouped(x.round() as u64)
    }
}

/// A rate for people: `85,572/s`, `4.25/s`.
pub fn human_rate(per_sec: f64) -> String {
    format!("{}/s", human_number(per_sec))
}

/// A plain left-aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    s.push_str(&line(headers.to_vec()));
    for r in rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations_and_rates_are_rounded_for_people() {
        assert_eq!(human_duration(Duration::from_nanos(1_240_846)), "1.24 ms");
        assert_eq!(human_duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(human_duration(Duration::from_micros(999_700)), "1.00 s");
        assert_eq!(human_duration(Duration::from_millis(12_345)), "12.3 s");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(human_rate(85_572.067_8), "85,572/s");
        assert_eq!(human_rate(4.2512), "4.25/s");
        assert_eq!(human_rate(1_234_567.4), "1,234,567/s");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
    }
}

//! Durations in messages, rounded for people: `1.24 ms`, `850 µs`, `12.3 s`, `1m05s`.

use std::time::Duration;

/// `d` with three significant digits at most, in the largest unit that keeps it above 1.
pub(crate) fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1.0 {
        return "0 µs".to_owned();
    }
    if us < 999.5 {
        return format!("{us:.0} µs");
    }
    let ms = us / 1e3;
    if ms < 999.5 {
        return format!("{} ms", three(ms));
    }
    let s = ms / 1e3;
    if s < 59.95 {
        return format!("{} s", three(s));
    }
    let secs = d.as_secs();
    if secs < 3600 {
        return format!("{}m{:02}s", secs / 60, secs % 60);
    }
    format!("{}h{:02}m", secs / 3600, secs / 60 % 60)
}

/// Three significant digits for a value in 1..1000.
fn three(x: f64) -> String {
    if x < 9.995 {
        format!("{x:.2}")
    } else if x < 99.95 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(Duration::from_nanos(220_220)), "220 µs");
        assert_eq!(duration(Duration::from_nanos(1_240_846)), "1.24 ms");
        assert_eq!(duration(Duration::from_nanos(501_350_273)), "501 ms");
        assert_eq!(duration(Duration::from_micros(999_700)), "1.00 s");
        assert_eq!(duration(Duration::from_millis(12_345)), "12.3 s");
        assert_eq!(duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(duration(Duration::from_secs(7300)), "2h01m");
        assert_eq!(duration(Duration::from_secs(7 * 24 * 3600)), "168h00m");
        assert_eq!(duration(Duration::from_millis(2_004)), "2.00 s");
        assert_eq!(duration(Duration::ZERO), "0 µs");
    }
}

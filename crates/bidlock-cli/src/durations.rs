//! Durations from the command line (`--wait`, `--ttl`, `--grace`, ...): the library
//! parses them, and every refusal says in one wording what was given and what is
//! accepted.

use std::time::Duration;

/// The range every seconds flag accepts, in words.
const SECONDS: &str = "seconds from 0 to 2592000 (30 days), decimals allowed";
/// The range of a ttl, in words.
const TTL: &str = "seconds from 0.01 to 2592000 (30 days), decimals allowed";

/// What is wrong with `s` as a number of seconds whose smallest accepted value is
/// `min`.
fn problem(s: &str, min: f64) -> String {
    match s.trim().parse::<f64>() {
        Err(_) => format!("{s:?} is not a number"),
        Ok(x) if x.is_nan() => format!("{s:?} is not a number"),
        Ok(x) if x.is_infinite() => format!("{s:?} is not a finite number"),
        Ok(x) if x < 0.0 => format!("{s} is negative"),
        Ok(x) if x < min => format!("{s} is below {min}"),
        Ok(_) => format!("{s} is more than 30 days"),
    }
}

/// `--wait`, `--grace` and the like: 0 to 30 days.
pub(crate) fn seconds(s: &str) -> Result<Duration, String> {
    bidlock::parse_seconds(s).map_err(|_| format!("expected {SECONDS}: {}", problem(s, 0.0)))
}

/// `--ttl`: the library's ttl rule (10 ms to 30 days).
pub(crate) fn ttl(s: &str) -> Result<Duration, String> {
    bidlock::Ttl::parse_secs(s)
        .map(bidlock::Ttl::get)
        .map_err(|_| format!("expected {TTL}: {}", problem(s, 0.01)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_says_what_was_given_and_what_is_accepted() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        assert_eq!(ttl("0.01"), Ok(Duration::from_millis(10)));
        type Parser = fn(&str) -> Result<Duration, String>;
        let cases: [(Parser, &str, &str); 8] = [
            (ttl, "-5", "-5 is negative"),
            (ttl, "0", "0 is below 0.01"),
            (ttl, "0.001", "0.001 is below 0.01"),
            (ttl, "inf", "\"inf\" is not a finite number"),
            (seconds, "inf", "\"inf\" is not a finite number"),
            (seconds, "-1", "-1 is negative"),
            (seconds, "soon", "\"soon\" is not a number"),
            (seconds, "9999999", "9999999 is more than 30 days"),
        ];
        for (parse, input, says) in cases {
            let e = parse(input).unwrap_err();
            assert!(e.ends_with(says), "{input}: {e}");
            assert!(e.starts_with("expected seconds from "), "{input}: {e}");
        }
    }
}

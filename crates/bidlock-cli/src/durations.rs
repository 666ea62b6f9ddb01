//! Durations from the command line (`--wait`, `--ttl`, `--grace`, ...): the library
//! parses ttls, [`crate::seconds`] the rest, and their refusals say in one wording what
//! was given and what is accepted (the same words `BID_LOCK_TTL` gets).

use std::time::Duration;

/// `--wait`, `--grace` and the like: 0 to 30 days.
pub(crate) fn seconds(s: &str) -> Result<Duration, String> {
    crate::seconds::seconds(s)
}

/// `--ttl`: the library's ttl rule (10 ms to 30 days), in its words.
pub(crate) fn ttl(s: &str) -> Result<Duration, String> {
    match bidlock::Ttl::parse_secs(s) {
        Ok(t) => Ok(t.get()),
        Err(bidlock::ConfigError::InvalidValue { reason, .. }) => Err(reason),
        Err(e) => Err(e.to_string()),
    }
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

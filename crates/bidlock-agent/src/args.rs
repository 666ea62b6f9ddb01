//! The command line: clap derive, with the doc comments as help text.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// A bidding agent service on bidlock.
///
/// Bidding tasks watch a fake marketplace that publishes postings at a steady rate, and
/// bid on the ones worth it through `bid_once` with the fencing token. The marketplace
/// refuses stale tokens and counts duplicate bids (there must be none). The lock backend
/// comes from the environment as the library reads it (`REDIS_URL`, `REDIS_HOST`,
/// `USE_REDIS_LOCKS`, `BID_LOCK_TTL`, ...), with one rule for every demo: Redis only when
/// an address is configured, otherwise the locks are in memory (a Redis that merely
/// answers at 127.0.0.1:6379 is never used unless USE_REDIS_LOCKS=true asks for Redis).
///
/// Runs until SIGTERM or SIGINT (or for `--seconds`). On a stop it takes no new postings,
/// lets running bids finish within `--grace`, closes the lock managers (which releases
/// what they hold) and exits.
#[derive(Debug, Parser)]
#[command(
    name = "bidlock-agent",
    version,
    after_help = "Exit codes: 0 stopped cleanly; 1 a posting got two bids, or a runtime failure \
                  (the metrics address is taken); 2 bad flag or configuration; 69 the lock \
                  backend never answered before --seconds ran out.\n\n\
                  Example:\n  REDIS_URL=redis://127.0.0.1:6379/0 USE_REDIS_LOCKS=true \
                  bidlock-agent --metrics-addr 127.0.0.1:9464"
)]
pub(crate) struct Args {
    /// Agent instances in this process, each with its own lock manager, as separate
    /// processes would have (with in-memory locks they share one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) instances: u16,

    /// Bidding tasks per instance: how many postings one instance works on at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) tasks: u16,

    /// Stop after this many seconds, as on SIGTERM. Without it, run until SIGTERM or
    /// SIGINT.
    #[arg(long, value_name = "S", value_parser = crate::seconds::seconds, allow_negative_numbers = true)]
    pub(crate) seconds: Option<Duration>,

    /// Serve Prometheus metrics at /metrics, readiness at /ready (the lock backend
    /// answers) and liveness at /live (never depends on Redis) on this address. Port 0
    /// picks a free port; the address is printed on stdout.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<SocketAddr>,

    /// After a stop, how long running bids may take to finish before they are cut off.
    /// Closing the managers takes at most 1.5 s more.
    #[arg(long, value_name = "S", default_value = "3", value_parser = crate::seconds::seconds,
          allow_negative_numbers = true)]
    pub(crate) grace: Duration,

    /// Postings the fake marketplace publishes per second.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) rate: u32,

    /// How long a posting accepts bids. Completion records are kept one minute longer,
    /// since a closed posting cannot be bid on anyway.
    #[arg(long, value_name = "S", default_value = "60", value_parser = parse_positive_seconds,
          allow_negative_numbers = true)]
    pub(crate) posting_open: Duration,

    /// How long the fake marketplace takes to answer a bid, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub(crate) bid_latency_ms: u64,

    /// Print the final summary as one JSON object instead of a sentence.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_positive_seconds(s: &str) -> Result<Duration, String> {
    let d = crate::seconds::seconds(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?} is less than one second"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_run_until_a_signal() {
        let a = Args::try_parse_from(["bidlock-agent"]).unwrap();
        assert_eq!(a.seconds, None);
        assert_eq!(a.instances, 1);
        assert_eq!(a.grace, Duration::from_secs(3));
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &["--instances", "0"][..],
            &["--seconds", "-1"],
            &["--metrics-addr", "localhost"],
            &["--posting-open", "0.5"],
            &["--nope"],
        ] {
            let err =
                Args::try_parse_from(std::iter::once("bidlock-agent").chain(bad.iter().copied()))
                    .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn negative_durations_reach_the_own_message() {
        for flag in ["--seconds", "--grace", "--posting-open"] {
            let err = Args::try_parse_from(["bidlock-agent", flag, "-1"]).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            let text = err.to_string();
            assert!(
                text.contains("-1 is negative") && !text.contains("-- -1"),
                "{flag}: {text}"
            );
        }
    }
}

//! The `bidlock` command: operators and shell scripts use bid locks through it. It holds
//! no lock logic of its own; every command goes through the `bidlock` library.

#![forbid(unsafe_code)]

pub mod exit;
pub mod output;

mod commands;
mod durations;
mod keep;
mod latency;
mod seconds;

use std::process::ExitCode;
use std::time::Duration;

use bidlock::{Backend, BidLockManager, ConfigBuilder, LockKey};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::CliError;

/// Fleet-wide bid locks: one lock per (marketplace, posting) in Redis.
///
/// Configuration comes from the environment (REDIS_URL, or REDIS_HOST / REDIS_PORT /
/// REDIS_DB / REDIS_PASSWORD / REDIS_USERNAME; USE_REDIS_LOCKS; BID_LOCK_TTL;
/// BID_LOCK_PREFIX); flags override it.
#[derive(Debug, Parser)]
#[command(name = "bidlock", version, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 negative answer (free, not held, duplicate); \
2 bad usage or input; 69 backend unavailable; 75 not acquired in time; 76 already done; \
77 lock lost while the command ran (not recorded); 78 recorded, but the lock was lost before \
the command finished; 79 the command succeeded but its completion could not be recorded; \
127 the command was not found.";

#[derive(Debug, Args)]
struct Global {
    /// Redis URL: redis://, rediss://, redis+sentinel://, or redis+cluster://h1:p1,h2:p2
    /// for a Redis Cluster (repeat for Redlock over several masters); default: the
    /// environment.
    #[arg(long = "redis-url", global = true, value_name = "URL")]
    redis_url: Vec<String>,
    /// Which backend: redis, memory (this process only), or auto. run, locks, status,
    /// release, cleanup, stats and health need the fleet's shared locks: for them auto
    /// means redis (exit 69 when it cannot be reached). simulate, metrics and bench use
    /// Redis only when one is configured (REDIS_URL, REDIS_HOST..., --redis-url), else
    /// memory. Default: USE_REDIS_LOCKS, else auto.
    #[arg(long, global = true, value_enum)]
    backend: Option<BackendArg>,
    /// Key prefix (default bid_lock).
    #[arg(long, global = true)]
    prefix: Option<String>,
    /// Print data as one JSON document.
    #[arg(long, global = true)]
    json: bool,
    /// Log more (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Auto,
    Redis,
    Memory,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hold a posting's lock while a command runs (flock(1) for the whole fleet).
    #[command(
        after_help = "Example (cron):\n  bidlock run upwork job_123 --wait 0 -- ./place_bid.sh\n\n\
The command gets BIDLOCK_KEY, BIDLOCK_HOLDER, BIDLOCK_FENCE (fencing token), \
BIDLOCK_MARKETPLACE and BIDLOCK_POSTING. It runs under a keeper process: if run itself \
dies (SIGKILL, the OOM killer), the command and everything it started are killed at once; \
SIGINT, SIGTERM and SIGHUP are passed on to the command; \
when the command ends, what it left running gets SIGTERM, then SIGKILL after --grace, \
before the lock is released.\n\n\
Exit: the command's code; 75 not acquired; 76 already done (--once); 77 lock lost while \
it ran (it got SIGTERM, then SIGKILL; nothing recorded); with --once also 78 recorded, but \
the lock was lost before it finished, and 79 it succeeded but the record failed (a \
command's own exit with 65, 69 or 75-79 becomes 1); 127 command not found."
    )]
    Run(commands::run::RunArgs),
    /// List held locks: key, holder, ttl left.
    #[command(after_help = "Example:\n  bidlock locks --marketplace upwork --json")]
    Locks {
        /// Only this marketplace.
        #[arg(long)]
        marketplace: Option<String>,
    },
    /// Show a posting's lock and completion record (exit 0 held, 1 free).
    #[command(after_help = "Example:\n  bidlock status upwork job_123")]
    Status {
        /// Marketplace id.
        marketplace: String,
        /// Posting id.
        posting: String,
    },
    /// Release a lock: holder-checked, or by force (exit 0 released, 1 not held).
    #[command(
        after_help = "Examples:\n  bidlock release upwork job_123 --holder instance-1\n  bidlock release upwork job_123 --force"
    )]
    Release {
        /// Marketplace id.
        marketplace: String,
        /// Posting id.
        posting: String,
        /// Release only if this holder has it (or give --force).
        #[arg(long, conflicts_with = "force")]
        holder: Option<String>,
        /// Release whoever holds it.
        #[arg(long)]
        force: bool,
    },
    /// Remove every lock of the prefix (completion records stay).
    #[command(after_help = "Example:\n  bidlock cleanup --yes")]
    Cleanup {
        /// Confirm: without it nothing is removed.
        #[arg(long)]
        yes: bool,
    },
    /// The fleet's picture from Redis: held locks, postings with waiters, completion
    /// records, the fencing token, per marketplace.
    #[command(
        after_help = "Read with SCAN (never KEYS): safe on a busy Redis, but a picture taken over a \
moment, not an atomic snapshot. --json prints {locks, waiting, done_records, fence, \
by_marketplace: {MARKETPLACE: {locks, waiting, done_records}}}.\n\n\
Examples:\n  bidlock stats\n  bidlock stats --json\n  bidlock stats --watch 2"
    )]
    Stats(commands::stats::StatsArgs),
    /// Ping the backend and print the latency (exit 0 ok, 69 unavailable or a cluster
    /// that is not ok).
    #[command(
        long_about = "Ping the backend and print its location, the latency and Redis' \
maxmemory-policy (a warning on stderr when it can evict locks). On a Redis Cluster it also \
prints the cluster state and how many masters serve slots.\n\n\
Exit 0 ok; 69 when the backend cannot be reached, and on a cluster whose cluster_state is \
not ok (some hash slots are not served: postings there fail).",
        after_help = "Examples (readiness probe):\n  bidlock health\n  \
bidlock --redis-url redis+cluster://10.0.0.1:7000,10.0.0.2:7000 health --json"
    )]
    Health,
    /// The counters of this command's own short self-check, not of a running instance.
    #[command(
        long_about = "Runs a short self-check on the backend (8 locks taken, contended, released or \
completed in a marketplace of its own, then cleaned up) and prints the counters of that \
self-check: they are not the counters of any running instance.\n\n\
For a running instance, scrape the agent's /metrics endpoint (bidlock-agent --metrics-addr \
HOST:PORT serves http://HOST:PORT/metrics). For the fleet's locks, waiters and completion \
records, run `bidlock stats`.",
        after_help = "Example:\n  bidlock metrics --format prometheus"
    )]
    Metrics {
        /// Output format.
        #[arg(long, value_enum, default_value_t = MetricsFormat::Json)]
        format: MetricsFormat,
    },
    /// The demo workload: agents race for postings; duplicates must be 0.
    #[command(after_help = "Example:\n  bidlock simulate --agents 32 --postings 10000")]
    Simulate(commands::simulate::SimulateArgs),
    /// Benchmark workloads (one JSON line each; Redis runs include a raw redis-rs baseline).
    #[command(
        after_help = "Examples:\n  bidlock bench uncontended --workers 32 --duration 5 --backend redis\n  bidlock bench hot-key --workers 8 --hold-us 1000 --backend redis\n  bidlock bench footprint --locks 200000 --backend memory\n  bidlock bench scale --leases 100000 --managers 1 --ttl 30 --backend redis"
    )]
    Bench(commands::bench::BenchArgs),
    /// The keeper between `run` and its command (started by `run`, not for people).
    #[command(name = "__keep", hide = true)]
    Keep(keep::KeepArgs),
    /// Print shell completions.
    #[command(
        after_help = "Example:\n  bidlock completions bash > /etc/bash_completion.d/bidlock"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MetricsFormat {
    Json,
    Prometheus,
}

/// Parses `--wait 2.5` style durations: seconds, decimals allowed, 0 to 30 days.
pub(crate) fn seconds(s: &str) -> Result<Duration, String> {
    durations::seconds(s)
}

/// Parses `--ttl`: the library's one ttl rule, with the CLI's one wording.
pub(crate) fn ttl(s: &str) -> Result<Duration, String> {
    durations::ttl(s)
}

/// A validated key from two arguments (exit 2 on bad input, before any I/O).
pub(crate) fn lock_key(marketplace: &str, posting: &str) -> Result<LockKey, CliError> {
    LockKey::new(marketplace, posting).map_err(|e| CliError::usage(format!("invalid key: {e}")))
}

/// The shortest connect timeout a `--wait` cuts it to: `--wait 0` still connects.
const MIN_CONNECT: Duration = Duration::from_secs(1);

impl Global {
    /// The global options as arguments, for a child process that must reach the same
    /// locks (the backend is forced to Redis: a child must never fall back to memory).
    pub(crate) fn to_child_args(&self) -> Vec<String> {
        let mut args = vec!["--backend".to_owned(), "redis".to_owned()];
        for url in &self.redis_url {
            args.extend(["--redis-url".to_owned(), url.clone()]);
        }
        if let Some(p) = &self.prefix {
            args.extend(["--prefix".to_owned(), p.clone()]);
        }
        args
    }

    fn config(&self, shared: bool) -> Result<ConfigBuilder, CliError> {
        let mut b = ConfigBuilder::from_env()?;
        if !self.redis_url.is_empty() {
            b = b.redis_urls(self.redis_url.clone());
        }
        if let Some(p) = &self.prefix {
            b = b.prefix(p.clone());
        }
        let backend = match self.backend {
            Some(BackendArg::Memory) => Backend::Memory,
            Some(BackendArg::Redis) => Backend::Redis,
            Some(BackendArg::Auto) => Backend::Auto,
            None => b.requested_backend(),
        };
        // Commands about the fleet's locks are meaningless on a private in-process
        // store: they need Redis unless memory was asked for on purpose.
        // The other commands never write into a Redis they merely happen to find: the
        // library's one rule for that, which the agent follows too.
        Ok(if shared && backend == Backend::Auto {
            b.backend(Backend::Redis)
        } else {
            b.backend(backend).without_default_redis()
        })
    }

    async fn manager(&self, shared: bool) -> Result<BidLockManager, CliError> {
        let config = self.config(shared)?.build()?;
        Ok(BidLockManager::new(config).await?)
    }

    /// A manager whose connect timeout is at most `wait` (but not below
    /// [`MIN_CONNECT`]): a command told to wait 2 s for a lock does not spend 5 s
    /// connecting to a server that accepts and never answers.
    async fn manager_within(
        &self,
        shared: bool,
        wait: Duration,
    ) -> Result<BidLockManager, CliError> {
        let b = self.config(shared)?;
        let configured = b.clone().build()?.connect_timeout();
        let cap = wait.max(MIN_CONNECT);
        let config = if configured > cap {
            b.connect_timeout(cap).build()?
        } else {
            b.build()?
        };
        Ok(BidLockManager::new(config).await?)
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "bidlock=debug,bidlock_cli=debug,warn",
        _ => "bidlock=trace,bidlock_cli=trace,info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Parses the arguments, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            });
        }
    };
    let Cli { global, command } = cli;
    // The keeper runs before anything starts a thread: it takes signals for the whole
    // process (see `keep`).
    let command = match command {
        Command::Keep(args) => return ExitCode::from(keep::keep(args)),
        other => other,
    };
    init_logging(global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bidlock: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(&global, command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if !e.is_quiet() {
                eprintln!("bidlock: {e}");
            }
            ExitCode::from(e.process_exit_code())
        }
    }
}

async fn run(g: &Global, command: Command) -> Result<u8, CliError> {
    match command {
        Command::Run(args) => commands::run::run(g, args).await,
        Command::Locks { marketplace } => commands::admin::locks(g, marketplace.as_deref()).await,
        Command::Status {
            marketplace,
            posting,
        } => commands::admin::status(g, &marketplace, &posting).await,
        Command::Release {
            marketplace,
            posting,
            holder,
            force,
        } => commands::admin::release(g, &marketplace, &posting, holder.as_deref(), force).await,
        Command::Cleanup { yes } => commands::admin::cleanup(g, yes).await,
        Command::Stats(args) => commands::stats::stats(g, args).await,
        Command::Health => commands::admin::health(g).await,
        Command::Metrics { format } => commands::admin::metrics(g, format).await,
        Command::Simulate(args) => commands::simulate::simulate(g, args).await,
        Command::Bench(args) => commands::bench::bench(g, args).await,
        Command::Keep(args) => Ok(keep::keep(args)),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "bidlock", &mut buf);
            output::print(&String::from_utf8_lossy(&buf))?;
            Ok(exit::OK)
        }
    }
}

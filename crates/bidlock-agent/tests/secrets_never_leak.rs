//! The agent never shows the Redis password: not in its logs at `RUST_LOG=trace`, its
//! stdout (the summary), `/metrics`, `/ready` or `/live`, with the password in `REDIS_URL`
//! or in `REDIS_PASSWORD`, right or wrong, the server up, unreachable or speaking TLS the
//! agent does not trust.

mod support;

use std::time::Duration;

use bidlock_testkit::{dead_port, RedisServer, ServerOptions};
use nix::sys::signal::Signal;
use support::Agent;

const SECRET: &str = "Agent5Kp-never-printed";
const WRONG: &str = "AgentWr0ng-never-printed";

/// Runs the agent with `env` (plus RUST_LOG=trace) until `up` says so, reads every
/// endpoint, stops it, and fails if anything it printed or served holds a password.
fn watch(label: &str, url: Option<&str>, env: &[(&str, String)], ready: bool) {
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "trace".to_owned()));
    let mut agent = Agent::start_with_env(url, &["--rate", "50", "--json"], &env);
    let mut served = String::new();
    if ready {
        served.push_str(&agent.wait_for("/ready", 200));
    } else {
        // Long enough for a few connect attempts and their warnings.
        std::thread::sleep(Duration::from_millis(1500));
        let (code, body) = agent.get("/ready");
        assert_eq!(code, 503, "{label}: {body}");
        served.push_str(&body);
    }
    for path in ["/metrics", "/ready", "/live"] {
        served.push_str(&agent.get(path).1);
    }
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.is_some(), "{label}: still running after SIGTERM");
    let printed = format!(
        "{served}\n{}\n{}",
        agent.stdout_lines().join("\n"),
        agent.stderr()
    );
    for s in [SECRET, WRONG] {
        assert!(
            !printed.contains(s),
            "{label}: the agent showed the password:\n{printed}"
        );
    }
    assert!(
        !agent.stderr().trim().is_empty(),
        "{label}: the agent logged nothing"
    );
}

#[test]
fn nothing_the_agent_prints_or_serves_holds_the_password() {
    let server = RedisServer::start_with(ServerOptions {
        password: Some(SECRET.into()),
        ..ServerOptions::default()
    });
    let tls = RedisServer::start_with(ServerOptions {
        password: Some(SECRET.into()),
        tls: true,
        ..ServerOptions::default()
    });
    let (p, t, dead) = (server.port(), tls.port(), dead_port());
    let parts = |port: u16, pw: &str| {
        vec![
            ("REDIS_HOST", "127.0.0.1".to_owned()),
            ("REDIS_PORT", port.to_string()),
            ("REDIS_PASSWORD", pw.to_owned()),
        ]
    };
    watch(
        "REDIS_URL",
        Some(&format!("redis://:{SECRET}@127.0.0.1:{p}/0")),
        &[],
        true,
    );
    let env = [("USE_REDIS_LOCKS", "true".to_owned())];
    watch(
        "REDIS_PASSWORD",
        None,
        &[&env[..], &parts(p, SECRET)].concat(),
        true,
    );
    watch(
        "wrong REDIS_URL",
        Some(&format!("redis://:{WRONG}@127.0.0.1:{p}/0")),
        &[],
        false,
    );
    watch(
        "wrong REDIS_PASSWORD",
        None,
        &[&env[..], &parts(p, WRONG)].concat(),
        false,
    );
    let unreachable = format!("redis://u:{SECRET}@127.0.0.1:{dead}/0");
    watch("unreachable", Some(&unreachable), &[], false);
    watch(
        "untrusted TLS",
        Some(&format!("rediss://:{SECRET}@127.0.0.1:{t}/0")),
        &[],
        false,
    );
}

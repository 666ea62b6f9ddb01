//! The Redis password never appears in anything `bidlock` prints: a scripted session of
//! every command, at the most verbose logging (`-vv`, `RUST_LOG=trace`, which includes
//! the Redis client's own logs), in text and `--json`, with the password given through
//! `REDIS_URL`, `REDIS_PASSWORD`, `--redis-url`, a Sentinel URL and a cluster URL; right
//! and wrong passwords, unreachable servers, TLS errors (an unknown certificate, TLS to a
//! plain port, plain to a TLS port) and malformed input that carries the password.

mod common;

use bidlock_testkit::{acl, dead_port, RedisCluster, RedisServer, SentinelCluster, ServerOptions};
use common::TestCommand;

/// Distinctive: any of these in the output is a leak.
const SECRET: &str = "Pw7fk3Qz-never-printed";
const WRONG: &str = "Wr0ng9dX-never-printed";
/// With characters a URL must percent-encode (`:`, `@`, `/`, `%`), given as is through
/// REDIS_PASSWORD and encoded in URLs.
const SPECIAL: &str = "Sp3c:i@l/pw%never";
const SPECIAL_IN_URL: &str = "Sp3c%3Ai%40l%2Fpw%25never";

/// Every form of the secrets that could be printed.
fn leaked(text: &str) -> Option<&'static str> {
    [
        SECRET,
        WRONG,
        SPECIAL,
        SPECIAL_IN_URL,
        "Sp3c:i@l",
        "l/pw%never",
    ]
    .into_iter()
    .find(|s| text.contains(s))
}

/// Every command, in text and JSON, as an operator would run them.
const EVERY: &[&[&str]] = &[
    &["health"],
    &["--json", "health"],
    &["locks"],
    &["--json", "locks"],
    &["status", "sec", "p"],
    &["--json", "status", "sec", "p"],
    &["stats"],
    &["--json", "stats"],
    &["run", "sec", "p", "--", "true"],
    &["--json", "run", "sec", "q", "--once", "--", "true"],
    &["release", "sec", "p", "--holder", "h"],
    &["release", "sec", "p", "--force"],
    &["cleanup", "--yes"],
    &["metrics"],
    &[
        "simulate",
        "--backend",
        "redis",
        "--agents",
        "2",
        "--postings",
        "4",
    ],
    &[
        "--backend",
        "redis",
        "bench",
        "uncontended",
        "--duration",
        "0.3",
        "--no-baseline",
    ],
];

/// What fails fast (wrong password, unreachable, TLS, bad input): the commands that connect.
const SOME: &[&[&str]] = &[
    &["health"],
    &["--json", "health"],
    &["locks"],
    &["run", "sec", "p", "--", "true"],
    &["--json", "status", "sec", "p"],
    &[
        "simulate",
        "--backend",
        "redis",
        "--agents",
        "2",
        "--postings",
        "4",
    ],
];

/// Runs `commands` with `env` set and, if given, `--redis-url`; fails on any leak. Returns
/// how many runs there were.
fn session(label: &str, env: &[(&str, String)], url: Option<&str>, commands: &[&[&str]]) -> usize {
    for args in commands {
        let all: Vec<&str> = ["-vv"].iter().chain(args.iter()).copied().collect();
        let mut t = TestCommand::with_url(url, &all);
        t.cmd.env("RUST_LOG", "trace");
        for (k, v) in env {
            t.cmd.env(k, v);
        }
        let out = t.output();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(s) = leaked(&text) {
            panic!(
                "{label}: `bidlock {}` printed the password {s:?}:\n{text}",
                all.join(" ")
            );
        }
        assert!(
            !text.trim().is_empty() || out.status.success(),
            "{label} {args:?}: silent"
        );
    }
    commands.len()
}

fn url_env(url: String) -> Vec<(&'static str, String)> {
    vec![("REDIS_URL", url)]
}

fn parts_env(port: u16, user: Option<&str>, password: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("REDIS_URL", String::new()),
        ("REDIS_HOST", "127.0.0.1".to_owned()),
        ("REDIS_PORT", port.to_string()),
        ("REDIS_PASSWORD", password.to_owned()),
    ];
    env.extend(user.map(|u| ("REDIS_USERNAME", u.to_owned())));
    env
}

fn acl_user(cmd: impl Fn(&[&str])) {
    let rules = acl::bidlock_rules();
    let args = acl::setuser_args("bidlock", &rules, SECRET);
    cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn one_server_right_and_wrong_passwords_unreachable_and_bad_input() {
    let auth = RedisServer::start_with(ServerOptions {
        password: Some(SECRET.into()),
        ..ServerOptions::default()
    });
    let special = RedisServer::start_with(ServerOptions {
        password: Some(SPECIAL.into()),
        ..ServerOptions::default()
    });
    let users = RedisServer::start();
    acl_user(|a| {
        let _: String = users.cmd(a);
    });
    let (p, s, u, dead) = (auth.port(), special.port(), users.port(), dead_port());
    let mut runs = 0;
    runs += session(
        "REDIS_URL",
        &url_env(format!("redis://:{SECRET}@127.0.0.1:{p}/0")),
        None,
        EVERY,
    );
    runs += session("REDIS_PASSWORD", &parts_env(p, None, SECRET), None, EVERY);
    runs += session(
        "REDIS_USERNAME",
        &parts_env(u, Some("bidlock"), SECRET),
        None,
        EVERY,
    );
    let flag = format!("redis://bidlock:{SECRET}@127.0.0.1:{u}/0");
    runs += session("--redis-url", &[], Some(&flag), EVERY);
    runs += session(
        "special, REDIS_PASSWORD",
        &parts_env(s, None, SPECIAL),
        None,
        SOME,
    );
    let special_url = format!("redis://:{SPECIAL_IN_URL}@127.0.0.1:{s}/0");
    runs += session("special, REDIS_URL", &url_env(special_url), None, SOME);
    for wrong in [
        url_env(format!("redis://:{WRONG}@127.0.0.1:{p}/0")),
        parts_env(p, None, WRONG),
        parts_env(u, Some("bidlock"), WRONG),
        url_env(format!("redis://:{SECRET}@127.0.0.1:{dead}/0")),
        parts_env(dead, Some("bidlock"), SECRET),
    ] {
        runs += session("wrong or unreachable", &wrong, None, SOME);
    }
    // Malformed settings that carry the password: refused, naming what is wrong.
    for bad in [
        format!("redis://:{SECRET}@127.0.0.1:notaport/0"),
        format!("redis://u:{SECRET}@"),
        format!("redis://u:{SECRET}@127.0.0.1:{p}/abc"),
        format!("u:{SECRET}@127.0.0.1:{p}"),
        format!("redis://u:pa/{SECRET}@127.0.0.1:{p}/0"),
        format!("redis+sentinel://:{SECRET}@127.0.0.1:1"),
        format!("redis+cluster://:{SECRET}@127.0.0.1:1/3"),
        format!("http://:{SECRET}@127.0.0.1:{p}"),
    ] {
        runs += session(
            &format!("bad URL {bad}"),
            &url_env(bad.clone()),
            None,
            &[&["health"]],
        );
        runs += session(
            &format!("bad --redis-url {bad}"),
            &[],
            Some(&bad),
            &[&["locks"]],
        );
    }
    let bad_port = vec![
        ("REDIS_PORT", "abc".to_owned()),
        ("REDIS_PASSWORD", SECRET.to_owned()),
    ];
    runs += session("bad REDIS_PORT", &bad_port, None, &[&["health"]]);
    eprintln!("{runs} runs of bidlock printed no password");
}

#[test]
fn tls_errors() {
    let tls = RedisServer::start_with(ServerOptions {
        password: Some(SECRET.into()),
        tls: true,
        ..ServerOptions::default()
    });
    let plain = RedisServer::start_with(ServerOptions {
        password: Some(SECRET.into()),
        ..ServerOptions::default()
    });
    let (t, p) = (tls.port(), plain.port());
    let ca = vec![("REDIS_TLS_CA_CERT", tls.ca_cert().display().to_string())];
    let mut trusted = url_env(format!("rediss://:{SECRET}@127.0.0.1:{t}/0"));
    trusted.extend(ca.clone());
    session("TLS, trusted", &trusted, None, SOME);
    // The server's certificate signed by nobody the client trusts.
    session(
        "TLS, unknown CA",
        &url_env(format!("rediss://:{SECRET}@127.0.0.1:{t}/0")),
        None,
        SOME,
    );
    // TLS to a plain port, plain to a TLS port.
    let mut to_plain = url_env(format!("rediss://:{SECRET}@127.0.0.1:{p}/0"));
    to_plain.extend(ca);
    session("TLS to a plain port", &to_plain, None, SOME);
    session(
        "plain to TLS",
        &url_env(format!("redis://:{SECRET}@127.0.0.1:{t}/0")),
        None,
        SOME,
    );
}

#[test]
fn sentinel_and_cluster_urls() {
    let sentinel = SentinelCluster::start();
    for s in &sentinel.servers {
        acl_user(|a| {
            let _: String = s.cmd(a);
        });
    }
    let cluster = RedisCluster::start();
    for n in &cluster.nodes {
        acl_user(|a| {
            let _: String = n.cmd(a);
        });
    }
    for (label, url) in [("sentinel", sentinel.url()), ("cluster", cluster.url())] {
        let right = acl::with_credentials(&url, "bidlock", SECRET);
        session(label, &url_env(right.clone()), None, EVERY);
        session(label, &[], Some(&right), SOME);
        session(
            label,
            &url_env(acl::with_credentials(&url, "bidlock", WRONG)),
            None,
            SOME,
        );
    }
    let (d1, d2) = (dead_port(), dead_port());
    let dead = format!("redis+sentinel://bidlock:{SECRET}@127.0.0.1:{d1},127.0.0.1:{d2}/m/0");
    session("sentinels unreachable", &url_env(dead), None, SOME);
    let dead = format!("redis+cluster://bidlock:{SECRET}@127.0.0.1:{d1},127.0.0.1:{d2}");
    session("cluster unreachable", &url_env(dead), None, SOME);
}

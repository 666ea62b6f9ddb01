//! The library never shows the Redis password: not in its logs at TRACE (the Redis
//! client's own `log` records included), nor in the `Debug` or `Display` of anything a
//! program may print (the builder, the configuration, the manager, errors, health), with
//! the password given in a URL or apart, right or wrong, the server up, down or speaking
//! TLS the client does not trust.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, ConfigBuilder, LockKey};
use bidlock_testkit::{dead_port, RedisServer, ServerOptions};

const SECRET: &str = "Lib9Qx-never-printed";
const WRONG: &str = "LibWr0ng-never-printed";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

fn assert_clean(what: &str, text: &str) {
    for s in [SECRET, WRONG] {
        assert!(!text.contains(s), "{what} shows the password:\n{text}");
    }
}

/// Builders as a program might make them: a URL with the password, or the password apart.
fn builders(url_with: &str, host_port: (u16, &str)) -> Vec<ConfigBuilder> {
    let base = || {
        Config::builder()
            .backend(Backend::Redis)
            .connect_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(1))
    };
    // The password apart, from the environment (this binary's only test sets it).
    let env = [
        ("REDIS_HOST", "127.0.0.1".to_owned()),
        ("REDIS_PORT", host_port.0.to_string()),
        ("REDIS_PASSWORD", host_port.1.to_owned()),
    ];
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let from_env = ConfigBuilder::from_env().expect("from the environment");
    for (k, _) in &env {
        std::env::remove_var(k);
    }
    vec![
        base().redis_url(url_with),
        base().redis_urls([url_with, url_with, url_with]),
        from_env
            .backend(Backend::Redis)
            .connect_timeout(Duration::from_secs(1)),
    ]
}

async fn everything_printable(what: &str, b: ConfigBuilder) -> String {
    let mut shown = format!("{b:?}\n");
    let config = match b.build() {
        Ok(c) => c,
        Err(e) => return format!("{shown}{e}\n{e:?}\n"),
    };
    shown.push_str(&format!("{config:?}\n"));
    for t in config.redis_targets() {
        shown.push_str(&format!("{t} {t:?}\n"));
    }
    match BidLockManager::new(config).await {
        Ok(m) => {
            shown.push_str(&format!("{m:?} {}\n", m.location()));
            shown.push_str(&format!("{:?}\n", m.health().await));
            let key = LockKey::new("sec", what).expect("key");
            match m.acquire(&key, &AcquireOptions::new().no_wait()).await {
                Ok(g) => {
                    shown.push_str(&format!("{g:?}\n"));
                    shown.push_str(&format!("{:?}\n", g.release().await));
                }
                Err(e) => shown.push_str(&format!("{e} {e:?}\n")),
            }
            shown.push_str(&format!("{:?}\n", m.status(&key).await));
            m.close().await;
        }
        Err(e) => shown.push_str(&format!(
            "{e}\n{e:?}\n{:?}\n",
            std::error::Error::source(&e)
        )),
    }
    shown
}

#[tokio::test]
async fn nothing_the_library_prints_or_logs_holds_the_password() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .try_init()
        .expect("the test's subscriber (also takes the `log` records of the Redis client)");
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
    let cases = [
        (
            "right",
            format!("redis://:{SECRET}@127.0.0.1:{p}/0"),
            (p, SECRET),
        ),
        (
            "wrong",
            format!("redis://:{WRONG}@127.0.0.1:{p}/0"),
            (p, WRONG),
        ),
        (
            "unreachable",
            format!("redis://u:{SECRET}@127.0.0.1:{dead}/0"),
            (dead, SECRET),
        ),
        (
            "untrusted TLS",
            format!("rediss://:{SECRET}@127.0.0.1:{t}/0"),
            (t, SECRET),
        ),
        (
            "no scheme",
            format!("u:{SECRET}@127.0.0.1:{p}"),
            (p, SECRET),
        ),
    ];
    for (what, url, parts) in cases {
        for b in builders(&url, parts) {
            let shown = everything_printable(what, b).await;
            assert_clean(&format!("{what}: what a program may print"), &shown);
        }
    }
    assert!(
        logs.text().contains("TRACE") || logs.text().contains("DEBUG"),
        "no logs captured"
    );
    assert_clean("the logs at TRACE", &logs.text());
}

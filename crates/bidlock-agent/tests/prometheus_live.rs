//! A real Prometheus, not only promtool (issue 23): the `prometheus` server scrapes a
//! running agent every second with deploy/prometheus/alerts.yml loaded; every query of
//! the Grafana dashboard (and its instance picker) returns a series; then Redis is
//! stopped, and the Redis-errors alert goes to firing, as seen through Prometheus' HTTP
//! API. Everything that waits is bounded.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bidlock_testkit::RedisServer;
use support::Agent;

/// How long Prometheus may take to see what it should (scrapes and rule evaluations run
/// every second).
const PATIENCE: Duration = Duration::from_secs(60);

fn deploy_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
        .canonicalize()
        .unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

/// `prometheus` is installed, or the test is skipped unless scripts/test.sh asked for it.
fn prometheus_available() -> bool {
    if Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("BIDLOCK_REQUIRE_PROMTOOL").is_none(),
        "prometheus is required (apt-get install prometheus; scripts/test.sh does it)"
    );
    eprintln!("prometheus not installed: skipped (scripts/test.sh installs it)");
    false
}

/// A Prometheus server on a free loopback port, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates `rules` every second.
    fn start(target: SocketAddr, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: bidlock-agent\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n",
                rules = rules.display()
            ),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], bidlock_testkit::free_port()));
        let log = dir.path().join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            addr,
            log,
            _dir: dir,
        };
        p.wait_until("ready", |p| http_get(p.addr, "/-/ready").0 == 200);
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET an API path; the parsed `data` of a success.
    fn api(&self, path: &str) -> serde_json::Value {
        let (code, body) = http_get(self.addr, path);
        assert_eq!(code, 200, "{path}: {body}\n{}", self.log());
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "{path}: {v}");
        v["data"].clone()
    }

    /// The result vector of an instant query.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The state of `alert` ("pending", "firing"), if it is active.
    fn alert_state(&self, alert: &str) -> Option<String> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == alert)
            .and_then(|a| a["state"].as_str().map(str::to_owned))
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut(&Prometheus) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "prometheus: {what} not within {PATIENCE:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An HTTP/1.0 GET (so the body is never chunked): status code and body, 0 when
/// nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return (0, String::new());
    }
    let mut response = String::new();
    if s.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Every query of the dashboard, with its template variable set to "All".
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy_file("grafana/bidlock-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                !expr.contains("$__"),
                "a Grafana macro this test does not substitute: {expr}"
            );
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                expr.replace("$instance", ".*"),
            ));
        }
    }
    assert!(!queries.is_empty());
    queries
}

#[test]
fn prometheus_scrapes_the_agent_every_dashboard_query_answers_and_the_redis_alert_fires() {
    if !prometheus_available() {
        return;
    }
    let mut server = RedisServer::start();
    let agent = Agent::start(Some(&server.url()), &["--rate", "200"]);
    agent.wait_for("/ready", 200);
    let prometheus = Prometheus::start(agent.addr, &deploy_file("prometheus/alerts.yml"));
    prometheus.wait_until("the agent is up", |p| {
        p.query("up{job=\"bidlock-agent\"} == 1").len() == 1
    });
    let rules = prometheus.api("/api/v1/rules");
    assert!(
        rules.to_string().contains("BidlockRedisErrors"),
        "alerts.yml not loaded: {rules}"
    );

    // Every panel's query, and the instance picker, return a series (rates and increases
    // need two scrapes: wait for them).
    for (title, expr) in dashboard_queries() {
        prometheus.wait_until(&format!("a series for {title:?}: {expr}"), |p| {
            !p.query(&expr).is_empty()
        });
    }
    let instances = prometheus.api(&format!(
        "/api/v1/label/instance/values?{}={}",
        encode("match[]"),
        encode("bidlock_lock_attempts_total")
    ));
    assert_eq!(instances, serde_json::json!([agent.addr.to_string()]));

    // With Redis up, the Redis-errors alert is quiet.
    assert_eq!(prometheus.alert_state("BidlockRedisErrors"), None);
    server.kill();
    prometheus.wait_until("BidlockRedisErrors firing", |p| {
        p.alert_state("BidlockRedisErrors").as_deref() == Some("firing")
    });
    let firing = prometheus.api("/api/v1/alerts");
    let alert = firing["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "BidlockRedisErrors")
        .unwrap();
    assert_eq!(alert["labels"]["severity"], "error", "{alert}");
    assert_eq!(
        alert["labels"]["instance"],
        agent.addr.to_string(),
        "{alert}"
    );
}

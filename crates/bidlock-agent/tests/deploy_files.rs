//! The alert rules and the Grafana dashboard under deploy/ query only metrics that a
//! real agent exports (names taken from a live /metrics scrape, so new metrics count
//! without editing a list), and the dashboard shows every lock metric and every metric
//! an alert fires on. promtool checks the rules themselves (scripts/test.sh).

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use bidlock_testkit::RedisServer;
use support::Agent;

fn deploy_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every `bidlock_*` identifier in a text (PromQL in JSON or YAML).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("bidlock_") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !preceded {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// (series names that can be queried, family names) of a scraped exposition.
fn exported(page: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut series = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.extend(rest.split(' ').next().map(str::to_owned));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            series.insert(line[..end].to_owned());
        }
    }
    (series, families)
}

fn scrape_real_agent() -> String {
    let server = RedisServer::start();
    let agent = Agent::start(Some(&server.url()), &[]);
    agent.wait_for("/ready", 200);
    let (code, page) = agent.get("/metrics");
    assert_eq!(code, 200);
    page
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let page = scrape_real_agent();
    let (series, families) = exported(&page);
    assert!(series.contains("bidlock_lock_conflicts_total"), "{page}");

    let dashboard_text = deploy_file("grafana/bidlock-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("the dashboard is valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        let targets = panel["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !metric_names(expr).is_empty(),
                "query without a bidlock metric: {expr}"
            );
        }
    }

    let on_dashboard = metric_names(&dashboard_text);
    let in_alerts = metric_names(&deploy_file("prometheus/alerts.yml"));
    for (file, names) in [("dashboard", &on_dashboard), ("alerts.yml", &in_alerts)] {
        let unknown: Vec<_> = names.difference(&series).collect();
        assert!(
            unknown.is_empty(),
            "{file} queries metrics the agent does not export: {unknown:?}\nexported: {series:?}"
        );
    }
    let missing_alerted: Vec<_> = in_alerts.difference(&on_dashboard).collect();
    assert!(
        missing_alerted.is_empty(),
        "alerted on but not on the dashboard: {missing_alerted:?}"
    );
    // A lock metric added to the library shows up in the scrape and must get a panel.
    let not_shown: Vec<_> = families
        .iter()
        .filter(|f| !f.starts_with("bidlock_agent_"))
        .filter(|f| !on_dashboard.iter().any(|d| d.starts_with(f.as_str())))
        .collect();
    assert!(
        not_shown.is_empty(),
        "exported but not on the dashboard: {not_shown:?}"
    );
}

#[test]
fn metric_names_are_found_in_queries() {
    let names = metric_names(
        r#"sum by (x) (rate(bidlock_lock_attempts_total{a="b"}[5m])) / my_bidlock_x + bidlock_wait_seconds_count"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["bidlock_lock_attempts_total", "bidlock_wait_seconds_count"]
    );
}

//! The figures of a bench JSON line said for people, on stderr: rates and durations
//! rounded (`85,572/s`, `1.24 ms`). The JSON line on stdout keeps full precision.

use std::time::Duration;

use serde_json::Value;

use crate::output::{grouped, human_duration, human_number, human_rate};

fn number(v: &Value, field: &str) -> Option<String> {
    v[field].as_f64().map(human_number)
}

fn rate(v: &Value, field: &str) -> Option<String> {
    v[field].as_f64().map(human_rate)
}

fn micros(v: &Value, field: &str) -> Option<String> {
    v[field]
        .as_f64()
        .filter(|us| us.is_finite() && *us >= 0.0)
        .map(|us| human_duration(Duration::from_secs_f64(us / 1e6)))
}

/// `label value` pairs, the missing ones left out.
fn join(parts: &[(&str, Option<String>)]) -> String {
    parts
        .iter()
        .filter_map(|(label, value)| value.as_ref().map(|v| format!("{label}{v}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line for the workload of `v`; `None` for a line that is not a workload's.
pub(crate) fn line(v: &Value) -> Option<String> {
    let workload = v["workload"].as_str()?;
    let backend = v["backend"].as_str().unwrap_or("?");
    let workers = match v["workers"].as_u64() {
        Some(1) => "1 worker".to_owned(),
        Some(n) => format!("{} workers", grouped(n)),
        None => String::new(),
    };
    let ratio = v["ratio"].as_f64().map(|r| format!("{r:.2}"));
    let figures = match workload {
        "uncontended" => join(&[
            (
                "",
                number(v, "pairs_per_sec").map(|r| format!("{r} acquire+release pairs/s")),
            ),
            ("acquire p50 ", micros(v, "acquire_p50_us")),
            ("p99 ", micros(v, "acquire_p99_us")),
            ("raw redis-rs ", rate(v, "raw_pairs_per_sec")),
            ("bidlock/raw ", ratio),
        ]),
        "hot-key" => join(&[
            (
                "",
                number(v, "cs_per_sec").map(|r| format!("{r} critical sections/s")),
            ),
            ("handover gap p50 ", micros(v, "gap_p50_us")),
            ("p99 ", micros(v, "gap_p99_us")),
            ("overlaps ", v["overlaps"].as_u64().map(grouped)),
            ("raw redis-rs ", rate(v, "raw_cs_per_sec")),
            ("bidlock/raw ", ratio),
        ]),
        "footprint" => join(&[
            (
                "",
                v["bytes_per_held_lock"]
                    .as_f64()
                    .map(|b| format!("{} bytes per held lock", grouped(b.round() as u64))),
            ),
            (
                "taken at ",
                number(v, "acquires_per_sec").map(|r| format!("{r} acquires/s")),
            ),
        ]),
        "scale" => join(&[
            ("", number(v, "leases").map(|n| format!("{n} leases held"))),
            ("renewals ", number(v, "renewals")),
            (
                "per round trip ",
                v["renewals_per_round_trip"]
                    .as_f64()
                    .map(|r| format!("{r:.2}")),
            ),
            (
                "client RSS per lease ",
                v["client_rss_bytes_per_lease"]
                    .as_f64()
                    .map(|b| format!("{} bytes", grouped(b.round() as u64))),
            ),
            (
                "Redis memory per lock ",
                v["redis_bytes_per_lock"]
                    .as_f64()
                    .map(|b| format!("{} bytes", grouped(b.round() as u64))),
            ),
            ("Redis commands ", rate(v, "redis_cmds_per_sec")),
        ]),
        _ => return None,
    };
    let who = if workers.is_empty() {
        backend.to_owned()
    } else {
        format!("{backend}, {workers}")
    };
    Some(format!("bench {workload} ({who}): {figures}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn figures_are_rounded_for_people() {
        let v = json!({"workload": "uncontended", "backend": "redis", "workers": 32,
            "pairs_per_sec": 85572.0678, "acquire_p50_us": 1240.846, "acquire_p99_us": 3000,
            "raw_pairs_per_sec": 90001.5, "ratio": 0.950811});
        assert_eq!(
            line(&v).unwrap(),
            "bench uncontended (redis, 32 workers): 85,572 acquire+release pairs/s, \
             acquire p50 1.24 ms, p99 3.00 ms, raw redis-rs 90,002/s, bidlock/raw 0.95"
        );
        assert_eq!(line(&json!({"sections": []})), None);
    }
}

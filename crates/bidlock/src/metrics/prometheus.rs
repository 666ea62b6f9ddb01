//! The Prometheus text exposition format (0.0.4) of a [`MetricsSnapshot`].

use std::fmt::Write as _;

use super::{MetricsSnapshot, COUNTERS};

impl MetricsSnapshot {
    /// The snapshot in the Prometheus text exposition format (version 0.0.4).
    ///
    /// Every series carries `backend="…"`; pass extra constant labels (for example the
    /// instance) in `labels`. Posting ids are never labels: their number is unbounded.
    pub fn to_prometheus(&self, backend: &str, labels: &[(&str, &str)]) -> String {
        let mut lbl = format!("backend=\"{}\"", escape_label(backend));
        for (k, v) in labels {
            let _ = write!(lbl, ",{}=\"{}\"", k, escape_label(v));
        }
        let mut out = String::new();
        for &c in COUNTERS {
            let name = c.name();
            let _ = writeln!(out, "# HELP {name} {}", c.help());
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{{lbl}}} {}", self.get(c));
        }
        let _ = writeln!(
            out,
            "# HELP bidlock_wait_seconds Time from the call to acquire until the lock was held."
        );
        let _ = writeln!(out, "# TYPE bidlock_wait_seconds summary");
        for (q, v) in [("0.5", self.wait_p50_us), ("0.99", self.wait_p99_us)] {
            let _ = writeln!(
                out,
                "bidlock_wait_seconds{{{lbl},quantile=\"{q}\"}} {}",
                v as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "bidlock_wait_seconds_count{{{lbl}}} {}",
            self.wait_count
        );
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_counter() {
        let s = MetricsSnapshot {
            lock_attempts: 3,
            ..Default::default()
        };
        let text = s.to_prometheus("memory", &[("marketplace", "up\"work")]);
        assert!(text.contains(
            "bidlock_lock_attempts_total{backend=\"memory\",marketplace=\"up\\\"work\"} 3"
        ));
        assert_eq!(text.matches("# TYPE").count(), COUNTERS.len() + 1);
    }
}

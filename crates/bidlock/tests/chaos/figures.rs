//! One round's (or one fault class's) figures, for RELIABILITY.md: counts add up over
//! rounds, maxima stay maxima.

use std::collections::BTreeMap;

/// One round's (or one fault class's) figures, for RELIABILITY.md.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    pub rounds: u64,
    pub seconds: f64,
    pub wall_secs: f64,
    pub faults_injected: u64,
    pub faults_effective: u64,
    pub sections: u64,
    pub process_sections: u64,
    pub bid_sections: u64,
    pub acquires_ok: u64,
    pub not_acquired: u64,
    pub cancelled_acquires: u64,
    pub errors: u64,
    pub lost_reported: u64,
    pub expired_at_acquire: u64,
    pub unsafe_overlaps: u64,
    pub expected_overlaps: u64,
    pub token_order_violations: u64,
    pub global_token_violations: u64,
    pub held_after_server_end: u64,
    pub removed_under_holder: u64,
    pub expected_claims: u64,
    pub max_expected_claim_ms: u64,
    pub late_loss_reports: u64,
    pub loss_hidden_by_shared_id: u64,
    pub max_loss_report_delay_ms: u64,
    pub kept_working_after_lease: u64,
    pub bids_past_lease: u64,
    pub frozen_late_ticks: u64,
    pub max_work_past_lease_ms: u64,
    pub postings: u64,
    pub bids_placed: u64,
    pub bids_unrecorded: u64,
    pub records_dropped_after_placed: u64,
    pub ran_twice_told: u64,
    pub ran_twice_after_data_loss: u64,
    pub ran_twice_untold: u64,
    pub never_ran: u64,
    pub phantom_records: u64,
    pub orphans: u64,
    pub orphans_released: u64,
    pub orphans_left: u64,
    /// Locks of a given holder id no section held (a cancelled try's, left to its ttl).
    pub given_orphans: u64,
    pub max_orphan_ms: u64,
    pub grants: u64,
    pub grants_taken: u64,
    pub grants_expired_unclaimed: u64,
    pub grants_handed_on: u64,
    pub handoff_keys_without_ttl: u64,
    pub census_keys: u64,
    pub census_without_ttl: u64,
    pub census_locks_left: u64,
    pub acquire_calls_lone: u64,
    pub acquire_calls_batched: u64,
    pub acquire_items_batched: u64,
    pub release_calls_batched: u64,
    pub release_items_batched: u64,
    pub cancelled_given_acquires: u64,
    pub link_chunks_held: u64,
    pub subscriber_chunks_held: u64,
    pub operator_releases_by_holder: u64,
    /// How often each rule of `excuses.rs` let a history pass, by rule name.
    pub excused: BTreeMap<String, u64>,
    pub recovery_ms_max: Option<u64>,
    pub observer_polls: u64,
    pub observer_max_gap_us: u64,
    pub violations: u64,
}

impl Figures {
    /// Adds another round's figures (counts add up, maxima stay maxima).
    pub fn merge(&mut self, o: &Figures) {
        let mut excused = std::mem::take(&mut self.excused);
        for (k, n) in &o.excused {
            *excused.entry(k.clone()).or_default() += n;
        }
        let v = serde_json::to_value(&*self).expect("figures");
        let w = serde_json::to_value(o).expect("figures");
        let (serde_json::Value::Object(mut a), serde_json::Value::Object(b)) = (v, w) else {
            return;
        };
        for (k, bv) in b {
            if k == "excused" {
                continue;
            }
            let av = a.get(&k).cloned().unwrap_or(serde_json::Value::Null);
            let merged = match (av.as_f64(), bv.as_f64()) {
                (Some(x), Some(y))
                    if k.starts_with("max_") || k.ends_with("_max") || k.ends_with("gap_us") =>
                {
                    x.max(y)
                }
                (Some(x), Some(y)) => x + y,
                (None, Some(y)) => y,
                (x, None) => x.unwrap_or(0.0),
            };
            let keep_null = av.is_null() && bv.is_null();
            a.insert(
                k.clone(),
                if keep_null {
                    serde_json::Value::Null
                } else {
                    number(&k, merged)
                },
            );
        }
        *self = serde_json::from_value(serde_json::Value::Object(a)).expect("figures");
        self.excused = excused;
    }
}

fn number(key: &str, x: f64) -> serde_json::Value {
    if matches!(key, "seconds" | "wall_secs") {
        serde_json::json!(x)
    } else {
        serde_json::json!(x.round() as u64)
    }
}

//! Redis users with restricted ACLs for the permission attacks: the commands each key
//! kind is sent by the scripts, and a helper that creates a user from rules.

use bidlock_testkit::RedisServer;

/// Root rules: the keyless commands and the scripts over every kind of key; the data
/// commands come from selectors (or further rules) the test adds.
pub const ROOT: &str = "reset on ~bid_lock:* ~bid_done:* ~bid_lock_wait:* ~bid_lock_queue:* \
    ~bid_lock_waiters:* ~bid_lock_fence &bid_lock_released &bid_lock_grants:* -@all \
    +evalsha +script|load +time +publish +subscribe +ping +info +scan";

/// What the scripts send on locks.
pub const LOCK_CMDS: &str = "+get +set +del +exists +type +pttl +pexpire";
/// On completion records.
pub const RECORD_CMDS: &str = "+get +set +del +exists +type +pttl";
/// On wait markers.
pub const MARKER_CMDS: &str = "+set +del +exists +pttl +pexpire";
/// On wait queues.
pub const QUEUE_CMDS: &str = "+zadd +zrem +zscore +zrange +zcard +exists +type +pttl +pexpire +del";
/// On the queued waiters' hashes.
pub const WAITERS_CMDS: &str = "+hset +hget +hdel +exists +type +pttl +pexpire +del";

/// Creates user `name` (password `pw-test`) with `rules`, whitespace-separated; returns
/// its URL.
pub fn user_with_rules(s: &RedisServer, name: &str, rules: &str) -> String {
    let rules: Vec<String> = rules.split_whitespace().map(str::to_owned).collect();
    let args = bidlock_testkit::acl::setuser_args(name, &rules, "pw-test");
    let _: () = s.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
    bidlock_testkit::acl::with_credentials(&s.url(), name, "pw-test")
}

/// Creates user `name` with [`ROOT`] and `selectors` (each a `(…)` rule); returns its URL.
pub fn user_with_selectors(s: &RedisServer, name: &str, selectors: &[String]) -> String {
    user_with_rules(s, name, &format!("{ROOT} {}", selectors.join(" ")))
}

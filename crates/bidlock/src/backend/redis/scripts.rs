//! The Lua scripts: every multi-step change is one script, run by `EVALSHA` and loaded
//! again by `SCRIPT LOAD` on `NOSCRIPT` (a restart, a failover, a `SCRIPT FLUSH`; on a
//! cluster, a new node). The sources live in `backend/scripts/`; what is sent as each
//! script is the concatenation of the files listed below, in that order.

use std::sync::LazyLock;

use redis::Script;

macro_rules! scripts {
    ($($name:ident => [$($file:literal),+]),* $(,)?) => {
        $(
            pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
                Script::new(concat!($(include_str!(concat!("../scripts/", $file))),+))
            });
        )*
    };
}

scripts! {
    // The token rules (hlc.lua), the checks for junk in the keys (junk.lua) and the
    // queue's rules (queue.lua) are written once and prepended where they are used.
    ACQUIRE => ["hlc.lua", "junk.lua", "queue.lua", "acquire.lua"],
    RELEASE => ["hlc.lua", "junk.lua", "queue.lua", "release.lua"],
    EXTEND => ["junk.lua", "tenure.lua", "extend.lua"],
    RENEW => ["junk.lua", "tenure.lua", "renew.lua"],
    HOLDS => ["tenure.lua", "holds.lua"],
    COMPLETE => ["junk.lua", "complete.lua"],
    FORCE_RELEASE => ["junk.lua", "force_release.lua"],
    CLEANUP => ["cleanup.lua"],
    STATUS => ["status.lua"],
    LIST => ["list.lua"],
    FENCE_FLOOR => ["fence_floor.lua"],
}

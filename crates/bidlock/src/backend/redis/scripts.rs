//! The Lua scripts: every multi-step change is one script, run by `EVALSHA` (redis-rs
//! loads it again on `NOSCRIPT`; on a cluster the node that lacks it gets it by `EVAL`,
//! see [`source_of`]). The sources live in `backend/scripts/`.

use std::sync::LazyLock;

use redis::Script;

macro_rules! scripts {
    ($($name:ident => [$($file:literal),+]),* $(,)?) => {
        $(
            pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
                Script::new(concat!($(include_str!(concat!("../scripts/", $file))),+))
            });
        )*

        /// Every script's SHA1 and source.
        static SOURCES: LazyLock<Vec<(&'static str, &'static str)>> = LazyLock::new(|| {
            vec![$(($name.get_hash(), concat!($(include_str!(concat!("../scripts/", $file))),+))),*]
        });
    };
}

scripts! {
    // The token rules (hlc.lua), the checks for junk in the keys (junk.lua) and the
    // queue's rules (queue.lua) are written once and prepended where they are used.
    ACQUIRE => ["hlc.lua", "junk.lua", "queue.lua", "acquire.lua"],
    RELEASE => ["hlc.lua", "junk.lua", "queue.lua", "release.lua"],
    EXTEND => ["junk.lua", "extend.lua"],
    RENEW => ["junk.lua", "renew.lua"],
    COMPLETE => ["junk.lua", "complete.lua"],
    FORCE_RELEASE => ["junk.lua", "force_release.lua"],
    CLEANUP => ["cleanup.lua"],
    STATUS => ["status.lua"],
    LIST => ["list.lua"],
    FENCE_FLOOR => ["fence_floor.lua"],
}

/// The source of one of our scripts by its SHA1.
pub(crate) fn source_of(sha: &[u8]) -> Option<&'static str> {
    SOURCES
        .iter()
        .find(|(hash, _)| hash.as_bytes() == sha)
        .map(|(_, source)| *source)
}

//! The Lua scripts: every multi-step change is one script, run by `EVALSHA` (redis-rs
//! loads it again on `NOSCRIPT`). The sources live in `backend/scripts/`.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(include_str!(concat!("../scripts/", $file))));
    };
}

script!(ACQUIRE, "acquire.lua");
script!(RELEASE, "release.lua");
script!(EXTEND, "extend.lua");
script!(RENEW, "renew.lua");
script!(COMPLETE, "complete.lua");
script!(FORCE_RELEASE, "force_release.lua");
script!(CLEANUP, "cleanup.lua");
script!(STATUS, "status.lua");
script!(LIST, "list.lua");
script!(FENCE_FLOOR, "fence_floor.lua");

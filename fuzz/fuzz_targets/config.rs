//! Fuzzes the configuration parsers: any environment and any URL give a config or a
//! typed error naming what was wrong, never a panic, and never an error or `Debug`
//! output that shows the password.
#![no_main]

use bidlock::{ConfigBuilder, LockKey, RedisTarget, ENV_VARS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Lines are values for the variables, in order.
    let values: Vec<&str> = text.split('\n').collect();
    let lookup = |name: &str| {
        ENV_VARS
            .iter()
            .position(|v| *v == name)
            .and_then(|i| values.get(i))
            .map(|v| (*v).to_owned())
    };
    match ConfigBuilder::from_lookup(lookup).and_then(|b| b.build()) {
        Ok(c) => {
            let _ = format!("{c:?}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok(t) = RedisTarget::from_url(&text) {
        let shown = format!("{t} {t:?}");
        if let Some(pw) = text.split_once("://").and_then(|(_, r)| r.split_once('@')).and_then(|(u, _)| u.split_once(':')).map(|(_, p)| p) {
            if pw.len() >= 4 && !pw.contains('/') {
                assert!(!shown.contains(&format!(":{pw}@")), "{shown}");
            }
        }
    }
    if let Some((m, p)) = text.split_once('\t') {
        let _ = LockKey::new(m, p);
    }
});

//! README.md and docs/*.md quote only `bidlock-agent` flags that exist (issue 23): every
//! quoted invocation (`bidlock-agent …`, `cargo run -p bidlock-agent -- …`) is checked
//! against the flags the real binary's `--help` lists. The `bidlock` invocations are
//! checked in the CLI's tests.

#[path = "../../bidlock-cli/tests/common/doc_commands.rs"]
mod doc_commands;

use std::process::Command;

use doc_commands::{check, quoted, Grammar, Program};

/// The flags `bidlock-agent --help` lists: `-h, --help`, `--seconds <S>`, ...
fn agent_grammar() -> Grammar {
    let out = Command::new(env!("CARGO_BIN_EXE_bidlock-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut g = Grammar::default();
    for line in help.lines().map(str::trim).filter(|l| l.starts_with('-')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let takes = words.iter().any(|w| w.starts_with('<'));
        for w in words.iter().take_while(|w| w.starts_with('-')) {
            let w = w.trim_end_matches(',');
            if let Some(long) = w.strip_prefix("--") {
                g.longs.insert(long.to_owned(), takes);
            } else if let Some(c) = w.strip_prefix('-').and_then(|s| s.chars().next()) {
                g.shorts.insert(c, takes);
            }
        }
    }
    assert!(g.longs.contains_key("metrics-addr"), "{help}");
    g
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn every_agent_command_the_docs_quote_exists() {
    let g = agent_grammar();
    assert_eq!(check(&g, &words("--seconds 5 --json")), Ok(()));
    assert_eq!(
        check(&g, &words("--metrics-addr 127.0.0.1:9464 --workers 3")),
        Err("the top level has no flag --workers".to_owned())
    );
    assert_eq!(
        check(&g, &words("serve")),
        Err("the top level takes no argument \"serve\"".to_owned())
    );
    let quoted: Vec<_> = quoted()
        .into_iter()
        .filter(|i| i.program == Program::Agent)
        .collect();
    assert!(
        quoted.iter().any(|i| !i.args.is_empty()),
        "no agent invocation with flags found: {quoted:?}"
    );
    let wrong: Vec<String> = quoted
        .iter()
        .filter_map(|i| {
            check(&g, &i.args)
                .err()
                .map(|e| format!("{}: bidlock-agent {}: {e}", i.place, i.args.join(" ")))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

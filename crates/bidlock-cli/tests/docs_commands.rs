//! README.md and docs/*.md quote only `bidlock` commands and flags that exist (issue 23):
//! every quoted invocation is checked against the real command line (clap's own
//! definition of `bidlock`, globals included). The agent's invocations are checked in
//! the agent's tests.

mod common;

use clap::CommandFactory;
use common::doc_commands::{check, quoted, Grammar, Program};

/// clap's definition, every level.
fn grammar(cmd: &clap::Command) -> Grammar {
    let mut g = Grammar {
        positionals: cmd.get_positionals().next().is_some(),
        ..Grammar::default()
    };
    for a in cmd.get_arguments() {
        let takes = a.get_action().takes_values();
        if let Some(long) = a.get_long() {
            g.longs.insert(long.to_owned(), takes);
        }
        for alias in a.get_all_aliases().unwrap_or_default() {
            g.longs.insert(alias.to_owned(), takes);
        }
        if let Some(short) = a.get_short() {
            g.shorts.insert(short, takes);
        }
    }
    for sub in cmd.get_subcommands() {
        g.subcommands
            .insert(sub.get_name().to_owned(), grammar(sub));
    }
    g
}

fn bidlock() -> Grammar {
    let mut cmd = bidlock_cli::Cli::command();
    // Globals are copied to every subcommand, and --help / --version added.
    cmd.build();
    grammar(&cmd)
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn the_checker_refuses_what_does_not_exist() {
    let g = bidlock();
    for good in [
        "run upwork job_123 --wait 0 --once -- ./place_bid.sh --not-ours",
        "--redis-url redis://h:1 locks --json",
        "bench hot-key --processes 4",
        "stats --watch=2",
        "-v health",
    ] {
        assert_eq!(check(&g, &words(good)), Ok(()), "{good}");
    }
    for (bad, says) in [
        (
            "frobnicate",
            "the top level has no subcommand \"frobnicate\"",
        ),
        ("run upwork j --nope -- true", "run has no flag --nope"),
        (
            "locks --marketplace upwork --holder x",
            "locks has no flag --holder",
        ),
        ("health -z", "health has no flag -z"),
    ] {
        assert_eq!(check(&g, &words(bad)), Err(says.to_owned()), "{bad}");
    }
}

#[test]
fn every_bidlock_command_the_docs_quote_exists() {
    let g = bidlock();
    let quoted: Vec<_> = quoted()
        .into_iter()
        .filter(|i| i.program == Program::Bidlock)
        .collect();
    // Not vacuous: docs/CLI.md alone quotes more than ten.
    assert!(quoted.len() > 10, "found only {quoted:?}");
    let wrong: Vec<String> = quoted
        .iter()
        .filter_map(|i| {
            check(&g, &i.args)
                .err()
                .map(|e| format!("{}: bidlock {}: {e}", i.place, i.args.join(" ")))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

//! README.md and docs/*.md quote only `bidlock` commands and flags that exist (issue 23):
//! every quoted invocation is checked against the real command line (clap's own
//! definition of `bidlock`, globals included); every flag named on its own exists in
//! `bidlock` or `bidlock-agent`; every environment variable named is one the code reads;
//! and the README's speed figures are those of BENCHMARKS.md. The agent's invocations
//! are checked against its real `--help` in the agent's tests.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use common::doc_commands::{bare_flags, check, documents, quoted, root, Grammar, Program};

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

/// Every flag name at every level of a grammar.
fn all_flags(g: &Grammar, into: &mut BTreeSet<String>) {
    into.extend(g.longs.keys().cloned());
    into.extend(g.shorts.keys().map(char::to_string));
    for sub in g.subcommands.values() {
        all_flags(sub, into);
    }
}

/// The agent's flags, read from its clap definition (`#[arg(long…)]` fields); the agent's
/// own tests check its quoted commands against the real binary's `--help`.
fn agent_flags() -> BTreeSet<String> {
    let path = root().join("crates/bidlock-agent/src/args.rs");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut flags = BTreeSet::new();
    let mut long_arg = false;
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[arg(") {
            long_arg = line.contains("long");
        } else if let Some(field) = line.strip_prefix("pub(crate) ") {
            if long_arg {
                let name = field.split(':').next().unwrap_or_default();
                flags.insert(name.replace('_', "-"));
            }
            long_arg = false;
        }
    }
    assert!(flags.contains("metrics-addr"), "{flags:?}");
    flags
}

/// Flags of other tools the docs name on their own, with the tool.
const OTHER_TOOLS: [(&str, &str); 2] = [("no-fail-fast", "cargo test"), ("scan", "redis-cli")];

#[test]
fn every_flag_the_docs_name_on_its_own_exists() {
    let mut known = BTreeSet::new();
    all_flags(&bidlock(), &mut known);
    known.extend(agent_flags());
    known.extend(OTHER_TOOLS.iter().map(|(flag, _)| (*flag).to_owned()));
    let named = bare_flags();
    // Not vacuous: the agent's flag table alone names nine.
    assert!(named.len() > 20, "found only {named:?}");
    let wrong: Vec<String> = named
        .iter()
        .filter(|(_, flag)| !known.contains(flag))
        .map(|(place, flag)| format!("{place}: no bidlock or bidlock-agent flag {flag:?}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The environment variables a text names: words of capitals, digits and `_` that start
/// with one of bidlock's prefixes.
fn env_names(text: &str) -> BTreeSet<String> {
    const PREFIXES: [&str; 4] = ["REDIS_", "BID_LOCK_", "BIDLOCK_", "USE_REDIS_"];
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| {
            PREFIXES
                .iter()
                .any(|p| w.starts_with(p) && w.len() > p.len())
        })
        .map(str::to_owned)
        .collect()
}

/// The code of the repository, outside target/ and the Markdown: Rust and Python sources
/// (where a variable is read by its quoted name) and shell, YAML and Docker files.
fn code(dir: &Path, quoted_names: &mut String, other: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && (!name.starts_with('.') || name == ".ci") {
                code(&path, quoted_names, other);
            }
            continue;
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        let into = match ext {
            "rs" | "py" | "pyi" => &mut *quoted_names,
            "sh" | "yaml" | "yml" | "toml" | "acl" => &mut *other,
            _ if name == "Dockerfile" || name == "run" => &mut *other,
            _ => continue,
        };
        if let Ok(text) = std::fs::read_to_string(&path) {
            into.push_str(&text);
            into.push('\n');
        }
    }
}

#[test]
fn every_environment_variable_the_docs_name_is_one_the_code_reads() {
    let (mut quoted_names, mut other) = (String::new(), String::new());
    for dir in ["crates", "scripts", "deploy", "bench", ".ci"] {
        code(&root().join(dir), &mut quoted_names, &mut other);
    }
    let in_other = env_names(&other);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (doc, text) in documents() {
        for name in env_names(&text) {
            checked += 1;
            if !quoted_names.contains(&format!("\"{name}\"")) && !in_other.contains(&name) {
                wrong.push(format!("{doc}: {name} is read nowhere in the code"));
            }
        }
    }
    // Not vacuous: docs/REDIS.md's table alone names eleven.
    assert!(checked > 20, "checked only {checked}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The numbers of a text, as written (`55.8`, `0.42`, `159`; not `p50` or `W=32`).
fn numbers(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| matches!(c, '(' | ')' | '[' | ']' | ',' | ';' | ':' | '.'))
        })
        .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .filter(|w| w.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_quotes_its_speed_figures_from_benchmarks_md() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let bench = std::fs::read_to_string(root().join("BENCHMARKS.md")).unwrap();
    let speed = readme
        .split("\n\n")
        .find(|p| p.starts_with("**Speed**"))
        .expect("README.md has a **Speed** paragraph");
    let figures = numbers(speed);
    // The handover's p50 and p99, the spinning client's, the W=32 ratio, and 32.
    assert!(figures.len() >= 6, "{figures:?}");
    let in_bench: BTreeSet<String> = numbers(&bench.replace(['(', ')', '|', '–', ':', '='], " "))
        .into_iter()
        .collect();
    let stale: Vec<&String> = figures.iter().filter(|f| !in_bench.contains(*f)).collect();
    assert!(
        stale.is_empty(),
        "README.md's speed paragraph quotes {stale:?}, which BENCHMARKS.md (regenerated?) \
         no longer shows: copy the current figures from it"
    );
}

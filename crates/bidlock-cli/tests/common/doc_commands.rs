//! The `bidlock` and `bidlock-agent` invocations that README.md and docs/*.md quote: in
//! ```sh (and bash, shell, console) blocks, `$ ` lines of ```text blocks, and inline
//! code spans, including `cargo run -p bidlock-cli -- …` and `cargo run -p bidlock-agent
//! -- …`. Shared by the CLI's and the agent's tests (`#[path]`), which check each against
//! the real command line.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Which binary an invocation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Bidlock,
    Agent,
}

/// One quoted invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `README.md:489`
    pub place: String,
    pub program: Program,
    /// The arguments after the program.
    pub args: Vec<String>,
}

/// The workspace's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and every docs/*.md, by name, with their text.
pub fn documents() -> Vec<(String, String)> {
    let mut docs = vec!["README.md".to_owned()];
    let mut pages: Vec<String> = std::fs::read_dir(root().join("docs"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".md"))
                .map(|n| format!("docs/{n}"))
                .collect()
        })
        .unwrap_or_default();
    pages.sort();
    docs.extend(pages);
    docs.into_iter()
        .map(|d| {
            let text =
                std::fs::read_to_string(root().join(&d)).unwrap_or_else(|e| panic!("{d}: {e}"));
            (d, text)
        })
        .collect()
}

/// Every invocation quoted in the documentation.
pub fn quoted() -> Vec<Invocation> {
    let mut found = Vec::new();
    for (doc, text) in documents() {
        let mut block: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            let place = format!("{doc}:{}", i + 1);
            if let Some(rest) = line.trim_start().strip_prefix("```") {
                block = match block {
                    Some(_) => None,
                    None => Some(rest.trim().to_owned()),
                };
                continue;
            }
            match block.as_deref() {
                Some("sh" | "bash" | "shell" | "console") => {
                    let command = line.trim_start().strip_prefix("$ ").unwrap_or(line);
                    found.extend(from_shell(&place, command));
                }
                Some("text") => {
                    if let Some(command) = line.trim_start().strip_prefix("$ ") {
                        found.extend(from_shell(&place, command));
                    }
                }
                Some(_) => {}
                None => {
                    for span in line.split('`').skip(1).step_by(2) {
                        found.extend(from_shell(&place, span));
                    }
                }
            }
        }
    }
    found
}

/// The flags quoted on their own in running text (`--grace`, `--count N`, `-v`), outside
/// code blocks and not part of a quoted command: the first word of an inline code span
/// that starts with `--`, or with `-` and one letter. (A `-word` span is an ACL rule, not
/// a flag.) Returns the place and the flag's name without dashes or `=value`.
pub fn bare_flags() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (doc, text) in documents() {
        let mut in_block = false;
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
                continue;
            }
            if in_block {
                continue;
            }
            for span in line.split('`').skip(1).step_by(2) {
                let Some(first) = span.split_whitespace().next() else {
                    continue;
                };
                let name = if let Some(long) = first.strip_prefix("--") {
                    long.split('=').next().unwrap_or(long)
                } else if let Some(short) = first.strip_prefix('-') {
                    if short.len() != 1 {
                        continue;
                    }
                    short
                } else {
                    continue;
                };
                if name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    found.push((format!("{doc}:{}", i + 1), name.to_owned()));
                }
            }
        }
    }
    found
}

/// Drops a `# comment` (a `#` at the start of a word, outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double, mut previous) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// Shell words, with quotes removed; `|`, `;` and `&` end a command (returned as `;`).
fn words(command: &str) -> Vec<String> {
    let (mut out, mut word, mut quote) = (Vec::new(), String::new(), None);
    let mut in_word = false;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() || matches!(c, '|' | ';' | '&') => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
                if !c.is_whitespace() {
                    out.push(";".to_owned());
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// The invocations in one shell line or code span.
fn from_shell(place: &str, command: &str) -> Vec<Invocation> {
    let all = words(strip_comment(command));
    all.split(|w| w == ";")
        .filter_map(|segment| invocation(place, segment))
        .collect()
}

fn program_named(word: &str) -> Option<Program> {
    match word.rsplit('/').next() {
        Some("bidlock") => Some(Program::Bidlock),
        Some("bidlock-agent") => Some(Program::Agent),
        _ => None,
    }
}

/// One command: `[VAR=value…] bidlock ARGS`, `bidlock-agent ARGS` or `cargo run … -p
/// bidlock-cli|bidlock-agent -- ARGS`.
fn invocation(place: &str, segment: &[String]) -> Option<Invocation> {
    let start = segment.iter().position(|w| !is_assignment(w))?;
    let words = &segment[start..];
    let first = words.first()?;
    let (program, args) = if let Some(p) = program_named(first) {
        (p, &words[1..])
    } else if first == "cargo" && words.get(1).map(String::as_str) == Some("run") {
        let package = words
            .windows(2)
            .find(|w| w[0] == "-p" || w[0] == "--package")
            .map(|w| w[1].as_str());
        let program = match package? {
            "bidlock-cli" => Program::Bidlock,
            "bidlock-agent" => Program::Agent,
            _ => return None,
        };
        let rest = words
            .iter()
            .position(|w| w == "--")
            .map_or(&[][..], |i| &words[i + 1..]);
        (program, rest)
    } else {
        return None;
    };
    // `bidlock = { … }` is a Cargo dependency line, not a command.
    if args.first().is_some_and(|a| a.starts_with('=')) {
        return None;
    }
    let args = args
        .iter()
        .map(|a| a.trim_matches(|c| matches!(c, '[' | ']' | '…')).to_owned())
        .filter(|a| !a.is_empty() && a != "..." && a != "\\")
        .collect();
    Some(Invocation {
        place: place.to_owned(),
        program,
        args,
    })
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    })
}

/// What a command line accepts at one level: its flags (with whether each takes a
/// value), its subcommands, and whether it has positional arguments.
#[derive(Debug, Default)]
pub struct Grammar {
    pub longs: HashMap<String, bool>,
    pub shorts: HashMap<char, bool>,
    pub subcommands: HashMap<String, Grammar>,
    pub positionals: bool,
}

/// Checks `args` against `g`: every flag exists where it is used, every subcommand
/// exists. Arguments after `--` belong to the command `run` starts.
pub fn check(g: &Grammar, args: &[String]) -> Result<(), String> {
    let mut here = g;
    let mut path: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let at = |path: &[&str]| {
            if path.is_empty() {
                "the top level".to_owned()
            } else {
                path.join(" ")
            }
        };
        if a == "--" {
            break;
        } else if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            let takes = here
                .longs
                .get(name)
                .ok_or_else(|| format!("{} has no flag --{name}", at(&path)))?;
            if *takes && !inline {
                i += 1;
            }
        } else if a.len() > 1
            && a.starts_with('-')
            && !a[1..].starts_with(|c: char| c.is_ascii_digit())
        {
            for c in a[1..].chars() {
                let takes = here
                    .shorts
                    .get(&c)
                    .ok_or_else(|| format!("{} has no flag -{c}", at(&path)))?;
                if *takes {
                    i += 1;
                    break;
                }
            }
        } else if let Some(sub) = here.subcommands.get(a) {
            path.push(a);
            here = sub;
        } else if !here.subcommands.is_empty() && !here.positionals {
            return Err(format!("{} has no subcommand {a:?}", at(&path)));
        } else if !here.positionals {
            return Err(format!("{} takes no argument {a:?}", at(&path)));
        }
        i += 1;
    }
    Ok(())
}

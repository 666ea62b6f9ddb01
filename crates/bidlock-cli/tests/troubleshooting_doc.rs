//! docs/TROUBLESHOOTING.md quotes the messages bidlock prints. This keeps every quote
//! true: each backtick span in the first column of the message table must be printable
//! by the code in `crates/*/src`.
//!
//! A quote may elide varying parts with `…`. What is left must be made of the string
//! literals of the source the way formatting makes messages: a part of one literal, or
//! the text before a `{placeholder}` of one literal followed by the start of another
//! literal (the value put there), and so on. So `lock backend … is unavailable:
//! connection refused` is found in `"lock backend {url} is unavailable: {reason}"` and
//! `"connection refused"`. The matcher is as lenient as formatting is (any literal may be
//! a placeholder's value), and it still catches a message the code never prints.

use std::path::{Path, PathBuf};

/// The text of a string literal between two placeholders (or its ends).
#[derive(Debug)]
struct Piece {
    text: String,
    starts_literal: bool,
    ends_literal: bool,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crates/*/src/**/*.rs` file's string literals, split into pieces.
fn source_pieces() -> Vec<Piece> {
    let mut files = Vec::new();
    for krate in std::fs::read_dir(repo().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 10, "found only {files:?}");
    files
        .iter()
        .flat_map(|f| string_literals(&std::fs::read_to_string(f).unwrap()))
        .flat_map(|l| pieces(&l))
        .collect()
}

/// The decoded contents of the string literals in Rust source (comments skipped).
fn string_literals(src: &str) -> Vec<String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let ident_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            // A char literal ('"', '\'', '\\'), else a lifetime.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c == 'r' && !ident_before && matches!(next, Some('"' | '#')) {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                i += 1;
                continue;
            }
            let start = i + 2 + hashes;
            let mut j = start;
            while j < chars.len()
                && !(chars[j] == '"' && chars[j + 1..].iter().take(hashes).all(|&h| h == '#'))
            {
                j += 1;
            }
            out.push(chars[start..j.min(chars.len())].iter().collect());
            i = j + 1 + hashes;
        } else if c == '"' {
            let (text, end) = decode_string(&chars, i + 1);
            out.push(text);
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Decodes a `"…"` literal starting after its quote; returns it and the index after it.
fn decode_string(chars: &[char], mut i: usize) -> (String, usize) {
    let mut text = String::new();
    while i < chars.len() && chars[i] != '"' {
        if chars[i] != '\\' {
            text.push(chars[i]);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('n') => text.push('\n'),
            Some('t') => text.push('\t'),
            Some('0') => text.push('\0'),
            Some('\n') => {
                // A line continuation: the newline and the next line's indent vanish.
                i += 2;
                while i < chars.len() && chars[i].is_whitespace() {
                    i += 1;
                }
                continue;
            }
            Some(&other) => text.push(other),
            None => {}
        }
        i += 2;
    }
    (text, i + 1)
}

/// A literal split at its format placeholders (`{}`, `{key}`, `{:?}`; `{{` is a brace).
fn pieces(literal: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = literal.chars().peekable();
    let mut starts_literal = true;
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                out.push(Piece {
                    text: std::mem::take(&mut text),
                    starts_literal,
                    ends_literal: false,
                });
                starts_literal = false;
            }
            c => text.push(c),
        }
    }
    out.push(Piece {
        text,
        starts_literal,
        ends_literal: true,
    });
    out
}

/// Whether formatting can print `fragment`: a part of one piece, or a chain of pieces
/// joined where a placeholder takes another literal's value.
fn found(fragment: &str, pieces: &[Piece]) -> bool {
    if pieces.iter().any(|p| p.text.contains(fragment)) {
        return true;
    }
    let n = fragment.len();
    // At byte i: a chain can end there right before a placeholder / at a literal's end.
    let mut before_placeholder = vec![false; n + 1];
    let mut at_literal_end = vec![false; n + 1];
    let mark = |p: &Piece, at: usize, bp: &mut Vec<bool>, le: &mut Vec<bool>| {
        bp[at] |= !p.ends_literal;
        le[at] |= p.ends_literal;
    };
    for p in pieces {
        for (at, _) in fragment.char_indices().skip(1) {
            if p.text.ends_with(&fragment[..at]) {
                mark(p, at, &mut before_placeholder, &mut at_literal_end);
            }
        }
    }
    let empty_between = pieces
        .iter()
        .any(|p| p.text.is_empty() && !p.starts_literal && !p.ends_literal);
    for i in 1..n {
        if !fragment.is_char_boundary(i) {
            continue;
        }
        // Two placeholders in a row: a value may end right before the next one's value.
        before_placeholder[i] |= at_literal_end[i] && empty_between;
        if !(before_placeholder[i] || at_literal_end[i]) {
            continue;
        }
        let rest = &fragment[i..];
        for q in pieces.iter().filter(|q| !q.text.is_empty()) {
            let joins = (before_placeholder[i] && q.starts_literal)
                || (at_literal_end[i] && !q.starts_literal);
            if !joins {
                continue;
            }
            if q.text.starts_with(rest) {
                return true;
            }
            if rest.starts_with(&q.text) {
                mark(
                    q,
                    i + q.text.len(),
                    &mut before_placeholder,
                    &mut at_literal_end,
                );
            }
        }
    }
    false
}

/// The backtick spans in the first column of the table whose first header is `message`.
fn quoted_messages(doc: &str) -> Vec<String> {
    let mut quotes = Vec::new();
    let mut in_table = false;
    for line in doc.lines() {
        let Some(row) = line.trim().strip_prefix('|') else {
            in_table = false;
            continue;
        };
        let first = row.split('|').next().unwrap_or_default().trim();
        if first == "message" {
            in_table = true;
            continue;
        }
        if !in_table || first.starts_with("---") {
            continue;
        }
        quotes.extend(first.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    quotes
}

fn fragments(quote: &str) -> impl Iterator<Item = &str> {
    quote
        .split(['…'])
        .flat_map(|f| f.split("..."))
        .filter(|f| !f.trim().is_empty())
}

#[test]
fn every_quoted_message_is_printed_by_the_code() {
    let doc = std::fs::read_to_string(repo().join("docs/TROUBLESHOOTING.md")).unwrap();
    let quotes = quoted_messages(&doc);
    assert!(
        quotes.len() >= 15,
        "the message table is missing: {quotes:?}"
    );
    let pieces = source_pieces();
    let missing: Vec<String> = quotes
        .iter()
        .filter(|q| fragments(q).any(|f| !found(f, &pieces)))
        .map(|q| {
            let bad: Vec<&str> = fragments(q).filter(|f| !found(f, &pieces)).collect();
            format!("{q:?} (not in the code: {bad:?})")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/TROUBLESHOOTING.md quotes messages the code does not print:\n{}",
        missing.join("\n")
    );
}

/// The matcher finds composed messages and refuses invented ones, on the real source.
#[test]
fn the_matcher_follows_formatting() {
    let pieces = source_pieces();
    // "not released: {} is not held{}" + " by that holder"
    assert!(found(" is not held by that holder", &pieces));
    // "lock backend {url} is unavailable: {reason}" + "connection refused"
    assert!(found(" is unavailable: connection refused", &pieces));
    // "environment variable {var}={value:?} is invalid: {reason}" with var "REDIS_PORT"
    assert!(found("environment variable REDIS_PORT=", &pieces));
    // What the document once quoted, and words the code never joins.
    assert!(!found("Holder mismatch", &pieces));
    assert!(!found(
        " is unavailable: connection refused by the server",
        &pieces
    ));
    assert!(!found("lock backend is down", &pieces));
    assert!(!found(
        "not released: the lock is held by someone else",
        &pieces
    ));
}

#[test]
fn literals_are_decoded() {
    let src = r##"let a = "x{y}z {{w}}"; // "comment"
        let c = '"'; let d = r#"raw "q""#; let e = "long \
            line\n";"##;
    let lits = string_literals(src);
    assert_eq!(lits, ["x{y}z {{w}}", "raw \"q\"", "long line\n"]);
    let p = pieces(&lits[0]);
    assert_eq!(
        p.iter().map(|p| p.text.as_str()).collect::<Vec<_>>(),
        ["x", "z {w}"]
    );
    assert!(p[0].starts_literal && !p[0].ends_literal);
    assert!(!p[1].starts_literal && p[1].ends_literal);
}

//! Writing results: human tables or one JSON document, quietly ending on a closed pipe.

use std::io::{self, Write};

use crate::exit::{self, CliError};

/// Writes `text` to stdout.
///
/// # Errors
///
/// A quiet [`CliError::broken_pipe`] when the reader went away (`bidlock locks | head`),
/// so the command stops and exits 0; another write error exits 1.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(CliError::broken_pipe()),
        Err(e) => Err(CliError::new(
            exit::FAILURE,
            format!("cannot write output: {e}"),
        )),
    }
}

/// Writes one JSON document and a newline.
///
/// # Errors
///
/// As [`print()`].
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(exit::FAILURE, format!("cannot encode JSON: {e}")))?;
    print(&format!("{s}\n"))
}

/// Milliseconds as a short human duration.
pub fn human_ms(ms: Option<u64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) if ms < 3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        Some(ms) => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// A plain left-aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    s.push_str(&line(headers.to_vec()));
    for r in rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}

//! Exit codes and the CLI's one error type.

use std::fmt;

/// Success; for `status`: the lock is held.
pub const OK: u8 = 0;
/// A negative answer: `status` free, `release` not held, `simulate` saw a duplicate.
pub const FAILURE: u8 = 1;
/// Bad usage or bad input; nothing was touched.
pub const USAGE: u8 = 2;
/// One of bidlock's keys holds something bidlock did not write there (a lock, record or
/// counter of another kind): nothing was changed (sysexits `EX_DATAERR`).
pub const CORRUPT_DATA: u8 = 65;
/// The backend is unavailable (sysexits `EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// `run`: the lock was not acquired within `--wait` (sysexits `EX_TEMPFAIL`).
pub const NOT_ACQUIRED: u8 = 75;
/// `run --once`: the posting was already handled.
pub const ALREADY_DONE: u8 = 76;
/// `run`: the lock was lost while the command ran (its processes were sent SIGTERM,
/// then SIGKILL); nothing was recorded.
pub const LOCK_LOST: u8 = 77;
/// `run --once`: the command succeeded and its completion is recorded, but the lock was
/// lost before it finished (another holder may have run it meanwhile).
pub const RECORDED_AFTER_LOSS: u8 = 78;
/// `run --once`: the command succeeded, but its completion could not be recorded (the
/// backend failed): another run may run it again.
pub const UNRECORDED: u8 = 79;
/// The codes `run --once` gives its own outcomes: a command's own exit with one of them
/// becomes 1, so that each code means one thing.
pub const RUN_RESERVED: [u8; 7] = [
    CORRUPT_DATA,
    UNAVAILABLE,
    NOT_ACQUIRED,
    ALREADY_DONE,
    LOCK_LOST,
    RECORDED_AFTER_LOSS,
    UNRECORDED,
];
/// `run`: the command could not be started.
pub const CANNOT_EXECUTE: u8 = 127;

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    message: String,
    quiet: bool,
}

impl CliError {
    /// An error with an explicit exit code.
    pub fn new(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
            quiet: false,
        }
    }

    /// The reader went away (`bidlock locks | head`): stop quietly, with success.
    pub fn broken_pipe() -> CliError {
        CliError {
            code: OK,
            message: String::new(),
            quiet: true,
        }
    }

    /// Whether to exit without a message.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Bad usage or input (exit 2).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(USAGE, message)
    }

    /// The exit code.
    pub fn process_exit_code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The one mapping from library errors to exit codes.
impl From<bidlock::Error> for CliError {
    fn from(e: bidlock::Error) -> CliError {
        let code = if e.is_invalid_input() {
            USAGE
        } else if matches!(e, bidlock::Error::WrongType { .. }) {
            CORRUPT_DATA
        } else if e.is_backend() {
            UNAVAILABLE
        } else if e.is_not_acquired() {
            NOT_ACQUIRED
        } else if e.is_already_done() {
            ALREADY_DONE
        } else if e.is_lost() {
            LOCK_LOST
        } else {
            FAILURE
        };
        CliError::new(code, e.to_string())
    }
}

impl From<bidlock::InvalidKey> for CliError {
    fn from(e: bidlock::InvalidKey) -> CliError {
        CliError::usage(e.to_string())
    }
}

impl From<bidlock::ConfigError> for CliError {
    fn from(e: bidlock::ConfigError) -> CliError {
        CliError::usage(e.to_string())
    }
}

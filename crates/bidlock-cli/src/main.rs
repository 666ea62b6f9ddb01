//! The `bidlock` operator CLI. All logic lives in the `bidlock_cli` library.

fn main() -> std::process::ExitCode {
    bidlock_cli::main()
}

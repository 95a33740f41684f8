//! `ketenhub-desk`: the caseworker's desk and the privacy officer's console.

fn main() -> std::process::ExitCode {
    desk::cli::main()
}

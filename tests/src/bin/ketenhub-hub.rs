//! The `hub` binary, built inside this package so that process-level tests
//! can find it through `CARGO_BIN_EXE_ketenhub-hub`.

fn main() -> std::process::ExitCode {
    hub::cli::main()
}

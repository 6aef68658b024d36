//! The `mirrorflow` binary: parse the command line and hand over to the library.

fn main() {
    std::process::exit(mirrorflow_cli::run());
}

#[path = "cli.rs"]
mod mirrorflow_cli;

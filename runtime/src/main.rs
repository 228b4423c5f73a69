//! The `entrepot` command: parses arguments and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    entrepot::cli::main(entrepot::cli::Cli::parse())
}

//! `entrepot-bench`: see the library's documentation and `BENCHMARKS.md`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match entrepot_bench::args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{}", entrepot_bench::args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("entrepot-bench: {e:#}\n\n{}", entrepot_bench::args::USAGE);
            return ExitCode::from(2);
        }
    };
    // Returning (rather than being killed) drops every child process guard.
    let outcome = tokio::select! {
        r = entrepot_bench::run(&args) => r,
        () = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("entrepot-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

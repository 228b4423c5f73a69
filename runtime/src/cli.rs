//! The command line: `serve`, `validate`, `schema`, `sign`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use clap::{Parser, Subcommand, ValueEnum};

use crate::compile::gateway::load_gateway;
use crate::compile::{self, platform_files};
use crate::config::process_env;
use crate::diagnostics::Diagnostic;

/// entrepot: a gateway between a mall and the supplier platforms whose goods it sells.
///
/// Each external platform is described by one YAML file in `platforms/`; entrepot builds and
/// signs its requests, maps its answers to the mall's canonical model and verifies its
/// callbacks, with no platform-specific code.
#[derive(Debug, Parser)]
#[command(name = "entrepot", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    ///
    /// Reads `entrepot.yaml` from the current directory (or the built-in defaults when it is
    /// absent: listen on 127.0.0.1:8080, platforms from ./platforms, state in ./data/), loads
    /// every platform file and serves until interrupted. Platform files with errors are
    /// reported and left out; the others are served.
    Serve {
        /// The gateway file. Default: `entrepot.yaml` in the current directory.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen on this address instead of the one in the gateway file (e.g. 127.0.0.1:0).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Check platform files and gateway files without running anything.
    ///
    /// Prints every problem of every file, each with file:line:column, the YAML path, a
    /// stable code and a hint, then exits 1; prints nothing and exits 0 when all is well.
    /// Directories are searched for *.yaml and *.yml. A file named entrepot.yaml (or
    /// *.entrepot.yaml) is checked as a gateway file, any other as a platform file.
    Validate {
        /// Files or directories. Default: the platforms directory of `entrepot.yaml`.
        paths: Vec<PathBuf>,
        /// Output format of the diagnostics (written to standard error).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the JSON Schemas of the configuration files.
    ///
    /// Editors use them to complete and check YAML: start a platform file with
    /// `# yaml-language-server: $schema=../schemas/platform.schema.json`.
    Schema {
        /// Which schema to print.
        #[arg(value_enum, default_value_t = SchemaKind::Platform)]
        kind: SchemaKind,
        /// Write every schema into this directory instead of printing one.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Output format of diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people: `file:line:col: error[CODE]: path: message`.
    Text,
    /// For tools: a JSON array of diagnostics.
    Json,
}

/// Which schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// The platform file.
    Platform,
    /// The gateway file.
    Gateway,
}

/// Runs a parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config, listen } => serve(config, listen),
        Command::Validate { paths, format } => validate(&paths, format),
        Command::Schema { kind, out } => schema(kind, out.as_deref()),
    }
}

fn print_diagnostics(diagnostics: &[Diagnostic], format: Format) {
    match format {
        Format::Text => {
            for d in diagnostics {
                eprintln!("{d}");
            }
        }
        Format::Json => {
            eprintln!(
                "{}",
                serde_json::to_string_pretty(diagnostics).unwrap_or_default()
            );
        }
    }
}

fn is_gateway_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    matches!(name, "entrepot.yaml" | "entrepot.yml")
        || name.ends_with(".entrepot.yaml")
        || name.ends_with(".entrepot.yml")
}

/// Checks files; returns every diagnostic.
pub fn validate_paths(paths: &[PathBuf]) -> Vec<Diagnostic> {
    let paths = if paths.is_empty() {
        match load_gateway(Path::new("entrepot.yaml"), false, &process_env) {
            Ok(g) => vec![g.platforms_dir],
            Err(d) => return d,
        }
    } else {
        paths.to_vec()
    };
    let files = match platform_files(&paths) {
        Ok(f) => f,
        Err(d) => return vec![d],
    };
    let (gateways, platforms): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|f| is_gateway_file(f));
    let mut diagnostics = Vec::new();
    for g in gateways {
        if let Err(mut d) = load_gateway(&g, true, &process_env) {
            diagnostics.append(&mut d);
        }
    }
    diagnostics.extend(compile::compile_files(&platforms, &process_env).diagnostics);
    diagnostics
}

fn validate(paths: &[PathBuf], format: Format) -> ExitCode {
    let diagnostics = validate_paths(paths);
    if diagnostics.is_empty() {
        return ExitCode::SUCCESS;
    }
    print_diagnostics(&diagnostics, format);
    if format == Format::Text {
        eprintln!("{} problem(s) found", diagnostics.len());
    }
    ExitCode::FAILURE
}

fn schema(kind: SchemaKind, out: Option<&Path>) -> ExitCode {
    if let Some(dir) = out {
        for (name, schema) in crate::schema::all() {
            let path = dir.join(name);
            if let Err(e) = std::fs::write(&path, crate::schema::to_file_text(&schema)) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let schema = match kind {
        SchemaKind::Platform => crate::schema::platform_schema(),
        SchemaKind::Gateway => crate::schema::gateway_schema(),
    };
    print!("{}", crate::schema::to_file_text(&schema));
    ExitCode::SUCCESS
}

fn serve(config: Option<PathBuf>, listen: Option<std::net::SocketAddr>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let explicit = config.is_some();
    let path = config.unwrap_or_else(|| PathBuf::from("entrepot.yaml"));
    let mut gateway = match load_gateway(&path, explicit, &process_env) {
        Ok(g) => g,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, Format::Text);
            eprintln!("error: the gateway file has problems; fix them and start again");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = listen {
        gateway.listen = addr;
    }
    let compiled = compile::compile_dir(&gateway.platforms_dir, &process_env);
    for d in &compiled.diagnostics {
        tracing::error!("{d}");
    }
    tracing::info!(
        platforms = compiled.plan.platforms.len(),
        dir = %gateway.platforms_dir.display(),
        config = %gateway.file.display(),
        "platforms loaded"
    );
    let state = crate::server::AppState {
        plan: Arc::new(ArcSwap::from_pointee(compiled.plan)),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(crate::server::serve(
        gateway.listen,
        state,
        |addr| tracing::info!(%addr, "listening"),
        shutdown_signal(),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", gateway.listen);
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what `kill` and container runtimes send).
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

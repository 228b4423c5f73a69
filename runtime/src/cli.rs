//! The command line: `serve`, `validate`, `schema`, `call`, `sign`, `sync`, `reconcile`.

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
        /// Format of the log (written to standard output). `text` is coloured only when
        /// standard output is a terminal; `json` writes one JSON object per line.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
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
        /// Output format of the diagnostics: `text` is written to standard error, `json` (the
        /// command's result, for tools) to standard output.
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
        /// Also write the Markdown reference of every field to this file.
        #[arg(long)]
        docs: Option<PathBuf>,
    },
    /// Run a canonical operation against the live platform and print its canonical output.
    ///
    /// Uses `entrepot.yaml` (platforms, store for id mappings, credentials file) like `serve`.
    /// With --dry-run nothing is sent: the exact signed request is printed instead, as `sign`
    /// prints it (ids translated, credentials masked).
    Call {
        /// The platform, as named in its file's `platform:`.
        platform: String,
        /// The canonical operation, such as inventory.get.
        operation: String,
        /// The operation's canonical input, a JSON or YAML file. Default: {}.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Print the signed request instead of sending it.
        #[arg(long)]
        dry_run: bool,
        /// The gateway file. Default: `entrepot.yaml` in the current directory.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output format of a dry run.
        #[arg(long, value_enum, default_value_t = PreviewFormat::Text)]
        format: PreviewFormat,
    },
    /// Sync a platform's products into the product center, with a progress bar.
    ///
    /// Uses `entrepot.yaml` like `serve`: products go to the targets subscribed to
    /// `product.upserted`, state (checkpoints, hashes, the lease) to its store. Incremental
    /// (products changed since the last sync) unless --full or the platform was never synced;
    /// an interrupted or failed sync is resumed where it stopped. Events are delivered while
    /// it runs (and by any running gateway). Ctrl-C stops after the current page; run the
    /// same command again to resume. Exits 1 when the sync did not finish.
    Sync {
        /// The platform, as named in its file's `platform:`.
        platform: String,
        /// List every product instead of those changed since the last sync.
        #[arg(long)]
        full: bool,
        /// The gateway file. Default: `entrepot.yaml` in the current directory.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Compare the orders the gateway recorded in a time window with what a platform reports.
    ///
    /// Uses `entrepot.yaml` (platforms, store, credentials file) like `serve`. Reads the order
    /// sagas paid within [--from, --to), asks the platform for each (its `order.list`, else
    /// `order.get`) and lists every mismatch: missing on either side, status, amount or line
    /// differs. Prints the report (JSON, or CSV rows with the summary on standard error);
    /// exits 0 when the report was made, whatever it holds, 1 when it could not be.
    Reconcile {
        /// The platform, as named in its file's `platform:`.
        platform: String,
        /// Window start: an RFC 3339 time (2024-05-01T00:00:00Z) or a date (2024-05-01,
        /// midnight UTC).
        #[arg(long)]
        from: String,
        /// Window end, excluded; at most 31 days after --from.
        #[arg(long)]
        to: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
        format: ReportFormat,
        /// The gateway file. Default: `entrepot.yaml` in the current directory.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the exact request an operation would send, fully built and signed, without
    /// sending it.
    ///
    /// The same builder as the live engine; the clock and the nonce can be fixed so the output
    /// is deterministic. Also prints every signing step's value, including the canonical
    /// string that was signed. Credential values are masked as *** everywhere (the signature
    /// itself is shown); key material derived from them is never shown.
    Sign {
        /// The platform file.
        #[arg(long)]
        platform: PathBuf,
        /// The canonical operation, such as inventory.get.
        #[arg(long)]
        operation: String,
        /// The operation's canonical input, a JSON or YAML file. Default: {}.
        #[arg(long)]
        input: Option<PathBuf>,
        /// The request's clock, RFC 3339 (e.g. 2016-01-01T12:00:00+08:00). Default: now.
        #[arg(long)]
        at: Option<String>,
        /// The request's nonce. Default: a fresh random one.
        #[arg(long)]
        nonce: Option<String>,
        /// A credentials file: platform → credential name → value (YAML or JSON). Credentials
        /// not in it come from ENTREPOT_CREDENTIAL_<PLATFORM>_<NAME> variables.
        #[arg(long)]
        credentials: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PreviewFormat::Text)]
        format: PreviewFormat,
    },
}

/// Output format of `sign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreviewFormat {
    /// An HTTP-like listing for people.
    Text,
    /// A JSON document for tools and tests.
    Json,
}

/// Output format of `reconcile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// The whole report as JSON: summary, mismatches, unchecked orders.
    Json,
    /// One CSV row per mismatch (with a header); the summary goes to standard error.
    Csv,
}

/// Format of the gateway's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, target, message, fields.
    Text,
    /// One JSON object per line for log collectors.
    Json,
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
        Command::Serve {
            config,
            listen,
            log_format,
        } => serve(config, listen, log_format),
        Command::Validate { paths, format } => validate(&paths, format),
        Command::Schema { kind, out, docs } => {
            if let Some(path) = &docs
                && let Err(e) = std::fs::write(path, crate::reference::markdown())
            {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            schema(kind, out.as_deref())
        }
        Command::Call {
            platform,
            operation,
            input,
            dry_run,
            config,
            format,
        } => {
            match call(
                &platform,
                &operation,
                input.as_deref(),
                dry_run,
                config,
                format,
            ) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Sync {
            platform,
            full,
            config,
        } => sync(&platform, full, config),
        Command::Reconcile {
            platform,
            from,
            to,
            format,
            config,
        } => match reconcile(&platform, &from, &to, config) {
            Ok(report) => {
                match format {
                    ReportFormat::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    ),
                    ReportFormat::Csv => {
                        print!("{}", report.to_csv());
                        eprintln!("{}", report.summary_line());
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Sign {
            platform,
            operation,
            input,
            at,
            nonce,
            credentials,
            format,
        } => {
            match sign_preview(
                &platform,
                &operation,
                input.as_deref(),
                at.as_deref(),
                nonce,
                credentials.as_deref(),
                format,
            ) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Builds and signs one request without sending it; returns the preview text.
pub fn sign_preview(
    platform_file: &Path,
    operation: &str,
    input: Option<&Path>,
    at: Option<&str>,
    nonce: Option<String>,
    credentials: Option<&Path>,
    format: PreviewFormat,
) -> Result<String, String> {
    let compiled = compile::compile_files(&[platform_file.to_path_buf()], &process_env);
    if compiled.has_errors() {
        let text: Vec<String> = compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        return Err(format!(
            "the platform file has problems:\n{}",
            text.join("\n")
        ));
    }
    let plan = compiled
        .plan
        .platforms
        .values()
        .next()
        .cloned()
        .ok_or_else(|| format!("{} defines no platform", platform_file.display()))?;
    let op = plan.operations.get(operation).ok_or_else(|| {
        let known: Vec<&str> = plan.operations.keys().map(String::as_str).collect();
        format!(
            "platform '{}' has no operation '{operation}' (it has: {})",
            plan.name,
            known.join(", ")
        )
    })?;
    let input: serde_json::Value = match input {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            serde_yaml_ng::from_str(&text)
                .map_err(|e| format!("{} is not JSON or YAML: {e}", p.display()))?
        }
        None => serde_json::json!({}),
    };
    let now = match at {
        Some(t) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
            format!("--at '{t}' is not an RFC 3339 time (like 2016-01-01T12:00:00+08:00): {e}")
        })?,
        None => time::OffsetDateTime::now_utc(),
    };
    let sets = match credentials {
        Some(p) => crate::credentials::read_file(p)?,
        None => Default::default(),
    };
    let creds = crate::credentials::resolve(&plan, &sets, &process_env);
    let built = crate::engine::build::build(
        &plan,
        op,
        &crate::engine::build::BuildInput {
            input: &input,
            credentials: &creds,
            now,
            nonce,
            token: matches!(plan.auth, crate::plan::AuthPlan::OAuth2(_))
                .then(|| "<access token>".to_string()),
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(format_preview(&plan.name, operation, built, &creds, format))
}

/// A built request for people or tools, every credential value masked.
pub fn format_preview(
    platform: &str,
    operation: &str,
    built: crate::engine::build::BuiltRequest,
    creds: &serde_json::Map<String, serde_json::Value>,
    format: PreviewFormat,
) -> String {
    // Mask every field before formatting, so escaping cannot hide a secret from the mask.
    let mask = |t: &str| crate::credentials::mask(t, creds);
    let body = mask(&String::from_utf8_lossy(&built.body));
    let mut built = built;
    built.url = mask(&built.url);
    for (_, v) in built.headers.iter_mut().chain(built.trace.steps.iter_mut()) {
        *v = mask(v);
    }
    // HTTP Basic carries the credentials base64-encoded, which the value mask cannot see.
    for (k, v) in built.headers.iter_mut() {
        if k.eq_ignore_ascii_case("authorization") && v.starts_with("Basic ") {
            *v = "Basic ***".into();
        }
    }
    let method = crate::engine::build::method_text(built.method);
    match format {
        PreviewFormat::Json => {
            let doc = serde_json::json!({
                "platform": platform,
                "operation": operation,
                "request": {
                    "method": method,
                    "url": built.url,
                    "headers": built.headers,
                    "content_type": built.content_type,
                    "body": body,
                },
                "signing": built.trace.steps.iter().map(|(k, v)| serde_json::json!({"step": k, "value": v})).collect::<Vec<_>>(),
            });
            let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            text.push('\n');
            text
        }
        PreviewFormat::Text => {
            let mut text = format!("{method} {}\n", built.url);
            if let Some(ct) = &built.content_type {
                text.push_str(&format!("Content-Type: {ct}\n"));
            }
            for (k, v) in &built.headers {
                text.push_str(&format!("{k}: {v}\n"));
            }
            text.push('\n');
            if !body.is_empty() {
                text.push_str(&body);
                text.push('\n');
            }
            if !built.trace.steps.is_empty() {
                text.push_str("\n# signing steps\n");
                for (k, v) in &built.trace.steps {
                    text.push_str(&format!("{k} = {v:?}\n"));
                }
            }
            text
        }
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
            println!(
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

/// Installs the log (to standard output, coloured only on a terminal, as text or JSON lines
/// carrying the trace id) and the trace pipeline (exporting over OTLP when `otlp` is given).
fn init_log(
    format: LogFormat,
    otlp: Option<&crate::compile::gateway::OtlpSettings>,
) -> Result<crate::telemetry::Telemetry, String> {
    use std::io::IsTerminal;
    let style = match format {
        LogFormat::Text => crate::telemetry::LogStyle::Text {
            ansi: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        },
        LogFormat::Json => crate::telemetry::LogStyle::Json,
    };
    crate::telemetry::install(style, otlp)
}

fn serve(
    config: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    log_format: LogFormat,
) -> ExitCode {
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
    // The log starts once the gateway file is read: it says where spans are exported.
    let telemetry = match init_log(log_format, gateway.otlp.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(o) = &gateway.otlp {
        tracing::info!(service = %o.service_name, sample_ratio = o.sample_ratio, "spans exported over OTLP");
    }
    // Every connection is a file descriptor, and so is every outbound call and store
    // connection: use what the hard limit allows, and say so when even that is too low.
    let open_files = match crate::fdlimit::raise() {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            crate::fdlimit::current()
        }
    };
    if let Some(limit) = open_files {
        tracing::debug!(limit, "open-file limit");
        if let Some(advice) = crate::fdlimit::advice(limit, gateway.server.max_connections) {
            tracing::warn!("{advice}");
        }
    }
    // What the file says, for the reload's check that it does not change at run time.
    let file_listen = gateway.listen;
    if let Some(addr) = listen {
        gateway.listen = addr;
    }
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
    // The gateway never runs without its store: what it acknowledges must be durable.
    let store_options = store_options(&gateway);
    let store = match runtime.block_on(crate::store::Store::open(&store_options)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("error: the gateway does not start without its store");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(store = %crate::store::redact_url(&gateway.store_url), "store open");
    let credentials = match &gateway.credentials_file {
        Some(path) => match crate::credentials::read_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Default::default(),
    };
    // The platforms: loaded, then kept up to date, by the reloader.
    let plan: Arc<ArcSwap<crate::plan::Plan>> = Arc::default();
    // What the gateway observes of its own work goes to these sinks, in this order: the
    // metrics, and the monitoring thresholds (evaluated on a schedule below).
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let monitor = Arc::new(crate::monitor::Monitor::new(
        store.clone(),
        plan.clone(),
        Arc::new(gateway.targets.clone()),
        gateway.monitoring.clone(),
    ));
    let sinks: Vec<Arc<dyn crate::observe::Sink>> = vec![metrics.clone(), monitor.clone()];
    let observer = crate::observe::Observer::new(sinks);
    let engine = Arc::new(
        crate::engine::Engine::new(store.clone(), credentials.clone(), process_env)
            .with_id_cache(gateway.id_cache)
            .with_observer(observer.clone())
            .with_monitoring(gateway.monitoring.defaults.clone()),
    );
    match runtime.block_on(engine.load_pushed()) {
        Ok(n) => tracing::info!(platforms = n, "pushed credentials loaded"),
        Err(e) => {
            eprintln!("error: cannot read the pushed credentials: {e}");
            return ExitCode::FAILURE;
        }
    }
    let dispatcher = crate::dispatch::Dispatcher::new(
        store.clone(),
        &gateway.targets,
        gateway.delivery.clone(),
        credentials.clone(),
        process_env,
    )
    .with_observer(observer);
    // Product sync: its schedules, the admin routes, and the internal consumer of
    // product.changed / product.offline callbacks (when a target receives the products).
    let syncer = Arc::new(
        crate::flows::sync::Syncer::new(
            plan.clone(),
            engine.clone(),
            Arc::new(gateway.targets.clone()),
            gateway.sync.clone(),
        )
        .with_notify(dispatcher.notify.clone()),
    );
    let mut targets = gateway.targets.clone();
    if let Some(internal) = crate::flows::sync::consumer_target(&gateway.targets) {
        targets.push(internal);
    }
    let dispatcher =
        Arc::new(dispatcher.with_consumer(crate::flows::sync::CONSUMER, syncer.clone()));
    let mut reloader =
        crate::reload::Reloader::new(gateway.platforms_dir.clone(), plan.clone(), process_env);
    if gateway.file.exists() {
        reloader = reloader.with_gateway_file(
            gateway.file.clone(),
            file_listen,
            gateway.store_url.clone(),
        );
    }
    reloader = reloader.with_engine(engine.clone(), gateway.credentials_file.clone());
    let reloader = Arc::new(reloader);
    let first = runtime.block_on(reloader.reload());
    tracing::info!(
        platforms = plan.load().platforms.len(),
        problems = first.errors.len(),
        dir = %gateway.platforms_dir.display(),
        config = %gateway.file.display(),
        "platforms loaded"
    );
    if gateway.reload_watch {
        let extra: Vec<PathBuf> = gateway
            .credentials_file
            .iter()
            .cloned()
            .chain(std::iter::once(gateway.file.clone()))
            .collect();
        match reloader.clone().watch(
            extra,
            gateway.reload_debounce,
            gateway.reload_poll,
            std::future::pending(),
        ) {
            Ok(watching) => {
                runtime.spawn(watching);
            }
            Err(e) => tracing::error!("{e}; reload with SIGHUP or POST /admin/v1/reload instead"),
        }
    }
    #[cfg(unix)]
    {
        let r = reloader.clone();
        runtime.spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading");
                r.reload().await;
            }
        });
    }
    // Every target, the internal consumers among them.
    let targets = Arc::new(targets);
    // The order saga: answers the order routes and resumes every saga with work left.
    let orders = Arc::new(crate::flows::saga::Orders::new(
        engine.clone(),
        plan.clone(),
        targets.clone(),
        Some(dispatcher.notify.clone()),
        gateway.orders,
    ));
    let (stop_orders, orders_stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(orders.clone().run(async move {
        let _ = orders_stopped.await;
    }));
    let state = crate::server::AppState {
        reloader: Some(reloader.clone()),
        plan,
        store: Some(store),
        engine: Some(engine),
        targets,
        admin_token: gateway.admin_token.clone(),
        notify: Some(dispatcher.notify.clone()),
        trust_forwarded_headers: gateway.server.trust_forwarded_headers,
        orders: Some(orders),
        sync: Some(syncer.clone()),
        metrics,
        monitor: Some(monitor.clone()),
    };
    let (stop_schedules, schedules_stopped) = tokio::sync::oneshot::channel::<()>();
    let schedules = runtime.spawn(syncer.clone().run_schedules(async move {
        let _ = schedules_stopped.await;
    }));
    let (stop_pollers, pollers_stopped) = tokio::sync::oneshot::channel::<()>();
    if let (Some(engine), Some(notify)) = (&state.engine, &state.notify) {
        runtime.spawn(crate::poller::run(
            state.plan.clone(),
            engine.clone(),
            state.targets.clone(),
            notify.clone(),
            async move {
                let _ = pollers_stopped.await;
            },
        ));
    }
    let (stop_monitor, monitor_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(engine) = &state.engine {
        let engine = engine.clone();
        runtime.spawn(monitor.run(
            move || engine.breakers_open_since(),
            Some(dispatcher.notify.clone()),
            async move {
                let _ = monitor_stopped.await;
            },
        ));
    }
    let (stop_dispatch, dispatch_stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatch_task = runtime.spawn(dispatcher.run(async move {
        let _ = dispatch_stopped.await;
    }));
    let result = runtime.block_on(crate::server::serve_with(
        gateway.listen,
        state,
        gateway.server,
        |addr| tracing::info!(%addr, "listening"),
        shutdown_signal(),
    ));
    let _ = stop_pollers.send(());
    let _ = stop_monitor.send(());
    let _ = stop_orders.send(());
    // Syncs stop after their current page, saved to resume later.
    syncer.stop();
    let _ = stop_schedules.send(());
    let _ = runtime.block_on(schedules);
    let _ = stop_dispatch.send(());
    let _ = runtime.block_on(dispatch_task);
    // The spans still waiting are exported before the process ends.
    telemetry.shutdown();
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

fn read_input(input: Option<&Path>) -> Result<serde_json::Value, String> {
    match input {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            serde_yaml_ng::from_str(&text)
                .map_err(|e| format!("{} is not JSON or YAML: {e}", p.display()))
        }
        None => Ok(serde_json::json!({})),
    }
}

/// How to open the gateway's store: its URL, and the key of stored credentials from
/// `ENTREPOT_CREDENTIALS_KEY`.
fn store_options(gateway: &crate::compile::gateway::GatewaySettings) -> crate::store::StoreOptions {
    crate::store::StoreOptions {
        url: gateway.store_url.clone(),
        credentials_key: process_env("ENTREPOT_CREDENTIALS_KEY")
            .filter(|k| !k.is_empty())
            .map(crate::config::Secret::new),
        ..Default::default()
    }
}

/// The gateway file, its platforms and one of them by name.
fn gateway_and_platform(
    platform: &str,
    config: Option<PathBuf>,
) -> Result<
    (
        crate::compile::gateway::GatewaySettings,
        Arc<crate::plan::PlatformPlan>,
    ),
    String,
> {
    let explicit = config.is_some();
    let path = config.unwrap_or_else(|| PathBuf::from("entrepot.yaml"));
    let gateway = load_gateway(&path, explicit, &process_env).map_err(|d| {
        let text: Vec<String> = d.iter().map(ToString::to_string).collect();
        format!("the gateway file has problems:\n{}", text.join("\n"))
    })?;
    let compiled = compile::compile_dir(&gateway.platforms_dir, &process_env);
    let plan = compiled
        .plan
        .platforms
        .get(platform)
        .cloned()
        .ok_or_else(|| {
            let problems: Vec<String> = compiled
                .diagnostics
                .iter()
                .map(ToString::to_string)
                .collect();
            let known: Vec<&str> = compiled.plan.platforms.keys().map(String::as_str).collect();
            format!(
                "no usable platform '{platform}' (loaded: {}){}",
                known.join(", "),
                if problems.is_empty() {
                    String::new()
                } else {
                    format!("\n{}", problems.join("\n"))
                }
            )
        })?;
    Ok((gateway, plan))
}

/// Reconciles one platform's orders of a window with the gateway's configuration.
fn reconcile(
    platform: &str,
    from: &str,
    to: &str,
    config: Option<PathBuf>,
) -> Result<crate::flows::reconcile::Report, String> {
    let window = crate::flows::reconcile::window(Some(from), Some(to)).map_err(|p| p.detail)?;
    let (gateway, plan) = gateway_and_platform(platform, config)?;
    let sets = match &gateway.credentials_file {
        Some(p) => crate::credentials::read_file(p)?,
        None => Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let store = crate::store::Store::open(&store_options(&gateway))
            .await
            .map_err(|e| e.to_string())?;
        let engine = crate::engine::Engine::new(store, sets, process_env);
        engine.load_pushed().await.map_err(|e| e.to_string())?;
        crate::flows::reconcile::reconcile(&engine, &plan, &window)
            .await
            .map_err(|p| p.detail)
    })
}

/// Runs (or dry-runs) one operation with the gateway's configuration.
fn call(
    platform: &str,
    operation: &str,
    input: Option<&Path>,
    dry_run: bool,
    config: Option<PathBuf>,
    format: PreviewFormat,
) -> Result<String, String> {
    let (gateway, plan) = gateway_and_platform(platform, config)?;
    let input = read_input(input)?;
    let sets = match &gateway.credentials_file {
        Some(p) => crate::credentials::read_file(p)?,
        None => Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let store = crate::store::Store::open(&store_options(&gateway))
            .await
            .map_err(|e| e.to_string())?;
        let engine = crate::engine::Engine::new(store, sets.clone(), process_env);
        engine.load_pushed().await.map_err(|e| e.to_string())?;
        let creds = engine.credentials_for(&plan);
        let outcome = engine
            .call(&plan, operation, &input, dry_run)
            .await
            .map_err(|p| serde_json::to_string_pretty(&p).unwrap_or_else(|_| p.to_string()))?;
        Ok(match outcome {
            crate::engine::CallOutcome::Output(v) => {
                format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
            }
            crate::engine::CallOutcome::DryRun(built) => {
                format_preview(&plan.name, operation, *built, &creds, format)
            }
        })
    })
}

/// Syncs one platform's products from the command line; see [`Command::Sync`].
fn sync(platform: &str, full: bool, config: Option<PathBuf>) -> ExitCode {
    use crate::flows::sync::{Status, Syncer, progress_line};
    use std::io::{IsTerminal, Write};
    let explicit = config.is_some();
    let path = config.unwrap_or_else(|| PathBuf::from("entrepot.yaml"));
    let gateway = match load_gateway(&path, explicit, &process_env) {
        Ok(g) => g,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, Format::Text);
            eprintln!("error: the gateway file has problems; fix them and start again");
            return ExitCode::FAILURE;
        }
    };
    let compiled = compile::compile_dir(&gateway.platforms_dir, &process_env);
    if !compiled.plan.platforms.contains_key(platform) {
        print_diagnostics(&compiled.diagnostics, Format::Text);
    }
    let sets = match &gateway.credentials_file {
        Some(p) => match crate::credentials::read_file(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Default::default(),
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
    let outcome = runtime.block_on(async {
        let store = crate::store::Store::open(&store_options(&gateway))
            .await
            .map_err(|e| e.to_string())?;
        let engine = Arc::new(
            crate::engine::Engine::new(store.clone(), sets.clone(), process_env)
                .with_id_cache(gateway.id_cache),
        );
        engine.load_pushed().await.map_err(|e| e.to_string())?;
        let dispatcher = Arc::new(crate::dispatch::Dispatcher::new(
            store.clone(),
            &gateway.targets,
            gateway.delivery.clone(),
            sets,
            process_env,
        ));
        let syncer = Arc::new(
            Syncer::new(
                Arc::new(ArcSwap::from_pointee(compiled.plan)),
                engine,
                Arc::new(gateway.targets.clone()),
                gateway.sync.clone(),
            )
            .with_notify(dispatcher.notify.clone()),
        );
        let (stop_dispatch, dispatch_stopped) = tokio::sync::oneshot::channel::<()>();
        let delivering = tokio::spawn(dispatcher.clone().run(async move {
            let _ = dispatch_stopped.await;
        }));
        let stopper = syncer.clone();
        let interrupt = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping after the current page...");
                stopper.stop();
            }
        });
        let started = std::time::Instant::now();
        let terminal = std::io::stderr().is_terminal();
        let last_line = std::sync::Mutex::new(std::time::Instant::now());
        let progress = |run: &crate::flows::sync::Run| {
            let line = progress_line(platform, run, started.elapsed());
            if terminal {
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
            } else if let Ok(mut last) = last_line.lock()
                && (last.elapsed() >= std::time::Duration::from_secs(1)
                    || run.status != Status::Running)
            {
                *last = std::time::Instant::now();
                eprintln!("{line}");
            }
        };
        let result = syncer.sync(platform, full, &progress).await;
        if terminal {
            eprintln!();
        }
        interrupt.abort();
        let _ = stop_dispatch.send(());
        let _ = delivering.await;
        // What is due now is delivered before exiting; what fails waits for its retry in the
        // outbox, for the gateway (or the next sync) to deliver.
        while dispatcher.tick().await > 0 {}
        result.map_err(|e| e.to_string())
    });
    match outcome {
        Ok(run) => {
            println!("{}", crate::flows::sync::summary(platform, &run));
            if run.status == Status::Done {
                ExitCode::SUCCESS
            } else {
                eprintln!("the sync was interrupted; run the same command again to resume it");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `rest-sim`: runs the REST supplier simulator until killed.
//!
//! ```text
//! cargo run -p rest-sim -- --listen 127.0.0.1:18090
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use rest_sim::{SimConfig, Simulator};

const USAGE: &str = "\
usage: rest-sim [--listen ADDR] [--client-id ID] [--client-secret SECRET] [--webhook-secret WHSEC] [--webhook-url URL]

  --listen ADDR            address to bind (default 127.0.0.1:18090)
  --client-id ID           accepted OAuth client id (default demo-client)
  --client-secret SECRET   its secret (default demo-client-secret)
  --webhook-secret WHSEC   Standard Webhooks secret, whsec_ + base64 (default: a demo secret)
  --webhook-url URL        where webhooks go (default: none; settable at /__sim/webhook-url)
  -h, --help               this text

The API is at http://ADDR/v2/..., the token endpoint http://ADDR/oauth/token, the control API
under http://ADDR/__sim/.";

fn main() -> ExitCode {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 18090));
    let mut config = SimConfig::new(
        rest_sim::DEMO_CLIENT_ID,
        rest_sim::DEMO_CLIENT_SECRET,
        rest_sim::DEMO_WEBHOOK_SECRET,
    );
    let mut webhook_url = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), args.next()),
        };
        let Some(value) = value else {
            eprintln!("rest-sim: {flag} needs a value\n\n{USAGE}");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--listen" => match value.parse() {
                Ok(a) => listen = a,
                Err(_) => {
                    eprintln!("rest-sim: --listen {value} is not an address like 127.0.0.1:18090");
                    return ExitCode::from(2);
                }
            },
            "--client-id" => config.client_id = value,
            "--client-secret" => config.client_secret = value,
            "--webhook-secret" => config.webhook_secret = value,
            "--webhook-url" => webhook_url = Some(value),
            _ => {
                eprintln!("rest-sim: unknown argument {flag}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rest-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let sim = match Simulator::start_on(config, listen).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("rest-sim: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(url) = webhook_url {
            sim.set_webhook_url(&url);
        }
        println!("rest-sim listening on {}", sim.base_url());
        let _ = tokio::signal::ctrl_c().await;
        sim.stop().await;
        ExitCode::SUCCESS
    })
}

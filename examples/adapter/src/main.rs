//! `adapter`: serves the hand-written adapter until killed.
//!
//! ```text
//! cargo run -p adapter -- --listen 127.0.0.1:18081 --base-url http://127.0.0.1:18080
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use adapter::{Adapter, Config};

const USAGE: &str = "\
usage: adapter [--listen ADDR] [--base-url URL] [--app-key KEY] [--app-secret SECRET]

  --listen ADDR        address to bind (default 127.0.0.1:18081; port 0 picks a free one)
  --base-url URL       the platform (default http://127.0.0.1:18080, channel-sim's default)
  --app-key KEY        app key (default sim-app-key, the simulator's demo value)
  --app-secret SECRET  app secret (default sim-app-secret, the simulator's demo value)
  -h, --help           this text

Serves POST /v1/platforms/yanxuan/operations/{product.get,product.list} and GET /healthz;
prints `adapter listening on http://ADDR` once it accepts connections.";

fn parse_args(
    args: impl IntoIterator<Item = String>,
) -> Result<Option<(SocketAddr, Config)>, String> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 18081));
    let mut config = Config {
        base_url: "http://127.0.0.1:18080".into(),
        app_key: "sim-app-key".into(),
        app_secret: "sim-app-secret".into(),
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = v
                    .parse()
                    .map_err(|_| format!("--listen: not a socket address: {v}"))?;
            }
            "--base-url" => config.base_url = value()?,
            "--app-key" => config.app_key = value()?,
            "--app-secret" => config.app_secret = value()?,
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Some((listen, config)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (listen, config) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("adapter: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let adapter = match Adapter::new(config) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("adapter: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("adapter: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("adapter listening on http://{addr}"),
        Err(e) => {
            eprintln!("adapter: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = axum::serve(listener, adapter::server::router(adapter)).await {
        eprintln!("adapter: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<(SocketAddr, Config)>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let (listen, config) = parse(&["--listen", "127.0.0.1:0", "--base-url", "http://x"])
            .unwrap()
            .unwrap();
        assert_eq!(listen.port(), 0);
        assert_eq!(config.base_url, "http://x");
        assert!(parse(&["--listen"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["-h"]).unwrap().is_none());
    }
}

//! `channel-sim`: runs the channel-API simulator until killed.
//!
//! ```text
//! cargo run -p channel-sim -- --listen 127.0.0.1:18080 --app-key K --app-secret S
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use channel_sim::{Catalog, SimConfig, Simulator};

const USAGE: &str = "\
usage: channel-sim [--listen ADDR] [--app-key KEY] [--app-secret SECRET] [--catalog CATALOG]

  --listen ADDR        address to bind (default 127.0.0.1:18080)
  --app-key KEY        accepted appKey (default sim-app-key)
  --app-secret SECRET  app secret for the signature (default sim-app-secret)
  --catalog CATALOG    `sample` (default) or `large:<spus>:<skus per spu>`
  -h, --help           this text

The channel API is at http://ADDR/channel/api.json, the control API under http://ADDR/__sim/.";

struct Args {
    listen: SocketAddr,
    app_key: String,
    app_secret: String,
    catalog: Catalog,
}

enum Parsed {
    Run(Args),
    Help,
}

fn parse_catalog(spec: &str) -> Result<Catalog, String> {
    if spec == "sample" {
        return Ok(Catalog::sample());
    }
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        ["large", spus, skus] => {
            let spus: usize = spus
                .parse()
                .map_err(|_| format!("bad SPU count in --catalog {spec}"))?;
            let skus: usize = skus
                .parse()
                .map_err(|_| format!("bad SKU count in --catalog {spec}"))?;
            Ok(Catalog::large(spus, skus))
        }
        _ => Err(format!(
            "unknown --catalog {spec} (expected sample or large:N:M)"
        )),
    }
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut out = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 18080)),
        app_key: channel_sim::DEMO_APP_KEY.to_string(),
        app_secret: channel_sim::DEMO_APP_SECRET.to_string(),
        catalog: Catalog::sample(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Parsed::Help);
        }
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                out.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: not a socket address: {v}"))?;
            }
            "--app-key" => out.app_key = value()?,
            "--app-secret" => out.app_secret = value()?,
            "--catalog" => out.catalog = parse_catalog(&value()?)?,
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Parsed::Run(out))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("channel-sim: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = SimConfig::new(&args.app_key, &args.app_secret, args.catalog);
    let sim = match Simulator::start_on(args.listen, config).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("channel-sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "channel-sim listening on {} (appKey {}); API {}/channel/api.json, control {}/__sim/",
        sim.base_url(),
        args.app_key,
        sim.base_url(),
        sim.base_url()
    );
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags() {
        let Ok(Parsed::Run(a)) = parse(&[
            "--listen",
            "127.0.0.1:18081",
            "--app-key",
            "K",
            "--app-secret=S",
            "--catalog",
            "large:10:2",
        ]) else {
            panic!("should parse");
        };
        assert_eq!(a.listen.to_string(), "127.0.0.1:18081");
        assert_eq!((a.app_key.as_str(), a.app_secret.as_str()), ("K", "S"));
        assert_eq!(a.catalog.spus.len(), 10);
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(parse(&["--listen"]).is_err());
        assert!(parse(&["--listen", "nowhere"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--catalog", "large:x:1"]).is_err());
        assert!(matches!(parse(&["--help"]), Ok(Parsed::Help)));
        assert!(matches!(parse(&[]), Ok(Parsed::Run(_))));
    }
}

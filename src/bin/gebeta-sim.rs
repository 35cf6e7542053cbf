//! `gebeta-sim`: serves the simulated Gebeta API (see `gebeta_operator::sim`).
//!
//! Prints exactly one line to stdout once listening:
//! `gebeta-sim listening on http://ADDR/api/v1`; logs go to stderr.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use gebeta_operator::sim::{API_PREFIX, Sim, SimConfig};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "gebeta-sim",
    version,
    about = "In-memory simulator of the Gebeta Maps service accounts API"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "GEBETA_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "GEBETA_SIM_TOKEN_TTL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    token_ttl: u64,
    /// Refresh answers a new refresh token and kills the old one.
    #[arg(long, env = "GEBETA_SIM_ROTATE_REFRESH_TOKENS")]
    rotate_refresh_tokens: bool,
    /// A management (user) token accepted by /service-accounts (repeatable).
    #[arg(
        long = "user-token",
        env = "GEBETA_SIM_USER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        default_value = "sim-user-token"
    )]
    user_tokens: Vec<String>,
    /// Latency added to every API call, in milliseconds.
    #[arg(long, env = "GEBETA_SIM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Probability (0..=1) that an API call answers 500.
    #[arg(long, env = "GEBETA_SIM_FAIL_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    fail_rate: f64,
    /// HS256 signing key for access tokens (random by default).
    #[arg(long, env = "GEBETA_SIM_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<String>,
    /// Log format.
    #[arg(long, env = "GEBETA_SIM_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("must be within 0..=1".into())
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }

    let mut config = SimConfig {
        token_ttl: Duration::from_secs(args.token_ttl),
        rotate_refresh_tokens: args.rotate_refresh_tokens,
        user_tokens: args
            .user_tokens
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect(),
        latency: Duration::from_millis(args.latency_ms),
        fail_rate: args.fail_rate,
        ..SimConfig::default()
    };
    if let Some(key) = args.signing_key {
        config.signing_key = key.into_bytes();
    }

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, token_ttl = args.token_ttl, rotate = config.rotate_refresh_tokens, "gebeta-sim starting");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "gebeta-sim listening on http://{addr}{API_PREFIX}")?;
        out.flush()?;
    }
    Sim::serve_with_shutdown(listener, config, shutdown_signal()).await?;
    tracing::info!("gebeta-sim stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

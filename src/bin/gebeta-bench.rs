//! `gebeta-bench`: runs a local control plane (with an audit log), gebeta-sim and the release
//! operator, creates N service accounts and M access tokens, and prints what it measured
//! (see [`gebeta_operator::bench`] and README, "Benchmarks"). Asserts nothing about time.

use clap::Parser as _;
use gebeta_operator::bench::{self, BenchArgs};

#[tokio::main]
async fn main() {
    let args = BenchArgs::parse();
    if let Some(path) = &args.show {
        match bench::load_report(path) {
            Ok(report) => println!("{}", bench::render(&report)),
            Err(err) => {
                eprintln!("gebeta-bench: {}: {err}", path.display());
                std::process::exit(1);
            }
        }
        return;
    }
    let json = args.json.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "target/bench/bench-{}x{}-{}.json",
            args.accounts,
            args.tokens,
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
        ))
    });
    match bench::run(args).await {
        Ok(report) => {
            println!("{}", bench::render(&report));
            if let Some(dir) = json.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match serde_json::to_string_pretty(&report)
                .map_err(|e| e.to_string())
                .and_then(|text| std::fs::write(&json, text).map_err(|e| e.to_string()))
            {
                Ok(()) => println!("JSON report: {}", json.display()),
                Err(e) => {
                    eprintln!("gebeta-bench: cannot write {}: {e}", json.display());
                    std::process::exit(1);
                }
            }
        }
        Err(err) => {
            eprintln!("gebeta-bench: {err}");
            std::process::exit(1);
        }
    }
}

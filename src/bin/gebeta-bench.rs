//! `gebeta-bench`: runs a local control plane (with an audit log), gebeta-sim and the release
//! operator, creates N service accounts and M access tokens, and prints what it measured
//! (see [`gebeta_operator::bench`] and README, "Benchmarks"); writes the JSON report and
//! SVG plots beside it. Asserts nothing about time.

use std::path::Path;

use clap::Parser as _;
use gebeta_operator::bench::{self, BenchArgs, Report, plot};

#[tokio::main]
async fn main() {
    let args = BenchArgs::parse();
    if let Some(path) = &args.show {
        match bench::load_report(path) {
            Ok(report) => {
                println!("{}", bench::render(&report));
                if let Some(dir) = &args.plot {
                    write_plots(&report, dir, path);
                }
            }
            Err(err) => fail(format!("{}: {err}", path.display())),
        }
        return;
    }
    let json = args.json.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "target/bench/bench-{}x{}-{}.json",
            args.accounts,
            args.tokens,
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
        ))
    });
    let plot_dir = args.plot.clone().unwrap_or_else(|| {
        json.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
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
                Err(e) => fail(format!("cannot write {}: {e}", json.display())),
            }
            write_plots(&report, &plot_dir, &json);
        }
        Err(err) => fail(err),
    }
}

/// Writes the report's plots to `dir`, named after `json`'s file stem, and prints their paths.
fn write_plots(report: &Report, dir: &Path, json: &Path) {
    let stem = json
        .file_stem()
        .map_or("bench".into(), |s| s.to_string_lossy());
    match plot::write_plots(report, dir, &stem) {
        Ok(written) => {
            for file in &written.files {
                println!("plot: {}", file.display());
            }
            if !written.skipped.is_empty() {
                let names: Vec<&str> = written.skipped.iter().map(|p| p.suffix()).collect();
                // Margins exist only for scheduled refreshes (`--lifetimes` > 0); reports
                // written before a series was added have none either.
                println!(
                    "no data for the {} plot(s): the run recorded none (margins need \
                     scheduled refreshes, --lifetimes > 0) or the report predates them",
                    names.join(", ")
                );
            }
        }
        Err(err) => fail(err),
    }
}

fn fail(err: impl std::fmt::Display) -> ! {
    eprintln!("gebeta-bench: {err}");
    std::process::exit(1);
}

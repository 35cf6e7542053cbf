//! Writes the CRDs generated from the Rust types into `crds/` and the Helm chart's `crds/`
//! (or into the directories given as arguments). `--check` compares instead of writing and
//! exits 1 on drift.

use std::{path::PathBuf, process::ExitCode};

const DEFAULT_DIRS: [&str; 2] = ["crds", "charts/gebeta-operator/crds"];

fn main() -> ExitCode {
    let mut check = false;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!(
                    "usage: crdgen [--check] [DIR...]   (default: {})",
                    DEFAULT_DIRS.join(" ")
                );
                return ExitCode::SUCCESS;
            }
            other => dirs.push(PathBuf::from(other)),
        }
    }
    if dirs.is_empty() {
        dirs = DEFAULT_DIRS.iter().map(PathBuf::from).collect();
    }
    let mut ok = true;
    for dir in &dirs {
        for (file, crd) in gebeta_operator::crd::all() {
            let path = dir.join(file);
            let want = gebeta_operator::crd::to_yaml(&crd);
            if check {
                if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
                    eprintln!(
                        "crdgen: {} differs from the Rust types: run `cargo run --bin crdgen`",
                        path.display()
                    );
                    ok = false;
                }
            } else if let Err(err) =
                std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, want))
            {
                eprintln!("crdgen: cannot write {}: {err}", path.display());
                ok = false;
            } else {
                println!("wrote {}", path.display());
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! A server process kept on a leash: a shell watchdog starts it in its own process group and
//! kills it as soon as the process that started it is gone, however that process ended.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

const WATCHDOG: &str = r#"parent=$1; log=$2; shift 2
"$@" >>"$log" 2>&1 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
kill -TERM "$child" 2>/dev/null
wait "$child""#;

pub struct Supervised {
    name: &'static str,
    watchdog: Mutex<Child>,
    log: PathBuf,
}

impl Supervised {
    pub fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[String],
        log: &Path,
    ) -> std::io::Result<Self> {
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(log)
            .arg(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Supervised {
            name,
            watchdog: Mutex::new(watchdog),
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn is_running(&self) -> bool {
        matches!(
            self.watchdog.lock().expect("not poisoned").try_wait(),
            Ok(None)
        )
    }

    /// The last `lines` lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn signal_group(&self, signal: &str) {
        let pid = self.watchdog.lock().expect("not poisoned").id();
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Supervised {
    /// Asks the whole process group to stop, and kills it if it has not within 15 s, so that
    /// ports and data directories are free when this returns.
    fn drop(&mut self) {
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.is_running() {
            self.signal_group("-KILL");
            let _ = self.watchdog.lock().expect("not poisoned").wait();
        }
    }
}

/// Removes `dir` once this process has exited, however it exits (tests keep their control
/// plane in a static that is never dropped).
pub fn remove_when_gone(dir: &Path) -> std::io::Result<()> {
    Command::new("sh")
        .arg("-c")
        .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; sleep 2; rm -rf "$2""#)
        .arg("janitor")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
}

//! A server process kept on a leash: a shell watchdog starts it in its own process group and
//! stops it as soon as the process that started it is gone, however that process ended
//! (SIGTERM, then SIGKILL after 10 s: a kube-apiserver whose etcd is gone may never finish
//! its graceful shutdown).

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
echo "$child" >"$log.pid"
stop() {
  kill -TERM "$child" 2>/dev/null
  i=0
  while kill -0 "$child" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  exit 0
}
trap stop TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
stop"#;

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
        Self::spawn_with_env(name, bin, args, log, &[])
    }

    /// Like [`Supervised::spawn`], with extra environment variables for the process.
    pub fn spawn_with_env(
        name: &'static str,
        bin: &Path,
        args: &[String],
        log: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(pid_file(log));
        let watchdog = Command::new("sh")
            .envs(env.iter().copied())
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
        // Wait until the watchdog has started the process and written its pid.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pid_file(log).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Supervised {
            name,
            watchdog: Mutex::new(watchdog),
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
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

    /// The supervised process's pid (not the watchdog's).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(pid_file(&self.log))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS:`.
    pub fn child_status_field(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// User + system CPU seconds of the process (from `/proc/<pid>/stat`, at 100 ticks/s).
    pub fn child_cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    }

    /// Sends SIGTERM to the process once: the watchdog forwards it and waits for the exit.
    pub fn terminate(&self) {
        let pid = self.watchdog.lock().expect("not poisoned").id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }

    /// Sends `signal` (e.g. `-KILL`) to the process and its watchdog at once.
    pub fn signal_group(&self, signal: &str) {
        let pid = self.watchdog.lock().expect("not poisoned").id();
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Supervised {
    /// Asks the process to stop (through its watchdog, so it gets exactly one SIGTERM), and
    /// kills the whole group if it has not stopped within 15 s, so that ports and data
    /// directories are free when this returns.
    fn drop(&mut self) {
        self.terminate();
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

fn pid_file(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(".pid");
    PathBuf::from(name)
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

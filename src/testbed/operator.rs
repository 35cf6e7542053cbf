//! The operator binary as a child process (for the demo, benchmarks and reliability tests),
//! supervised like the control plane so it never outlives its parent.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{TestbedError, free_port, process::Supervised};

/// Environment variable naming the operator binary to run.
pub const OPERATOR_BIN_ENV: &str = "GEBETA_OPERATOR_BIN";

/// The operator binary: `$GEBETA_OPERATOR_BIN`, or `gebeta-operator` next to the running
/// executable (binaries in `target/<profile>/`, test binaries in `target/<profile>/deps/`).
pub fn operator_binary() -> Result<PathBuf, TestbedError> {
    if let Ok(path) = std::env::var(OPERATOR_BIN_ENV) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    [dir.join("gebeta-operator"), dir.join("../gebeta-operator")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            TestbedError::Binaries(format!(
                "no gebeta-operator binary beside {}: run `cargo build --bins`",
                exe.display()
            ))
        })
}

/// A running operator process.
pub struct OperatorProcess {
    process: Supervised,
    admin_port: u16,
    log: PathBuf,
}

impl OperatorProcess {
    /// Starts the operator with `kubeconfig`, the admin server on a free port, and `args`.
    /// Its log goes to `log`.
    pub fn spawn(
        binary: &Path,
        kubeconfig: &Path,
        log: &Path,
        args: &[String],
    ) -> Result<Self, TestbedError> {
        let admin_port = free_port()?;
        let mut all = vec![format!("--admin-addr=127.0.0.1:{admin_port}")];
        all.extend(args.iter().cloned());
        // KUBECONFIG is how the operator finds the API server.
        let process = Supervised::spawn_with_env(
            "gebeta-operator",
            binary,
            &all,
            log,
            &[("KUBECONFIG", kubeconfig.as_os_str())],
        )?;
        Ok(OperatorProcess {
            process,
            admin_port,
            log: log.to_path_buf(),
        })
    }

    /// `http://127.0.0.1:<admin port>`.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// The operator's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// kill -9: the operator dies wherever it is.
    pub fn kill(&self) {
        self.process.signal_group("-KILL");
        self.process.wait_exit(Duration::from_secs(10));
    }

    /// SIGTERM, then waits up to `timeout` for a graceful exit; true if it exited.
    pub fn terminate(&self, timeout: Duration) -> bool {
        self.process.terminate();
        self.process.wait_exit(timeout)
    }

    /// Resident memory of the operator process in KiB (Linux), if it is running.
    pub fn rss_kib(&self) -> Option<u64> {
        self.process.child_status_field("VmRSS:")
    }

    /// Peak resident memory in KiB (Linux).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.process.child_status_field("VmHWM:")
    }

    /// CPU seconds (user + system) the operator process has used.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.process.child_cpu_seconds()
    }
}

//! Logging: `tracing` to stderr, as text or one JSON object per line, filtered by
//! `--log-level` (or `RUST_LOG`).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use super::cli::LogFormat;

/// Added to the filter unless it names `kube_runtime` itself. kube-runtime wraps every running
/// reconcile in an INFO span ("reconciling object"), and its runner polls *every* running
/// reconcile each time it wakes, entering and leaving that span for each: in a refresh burst
/// of 3,000 tokens (each parked at the deadline gate) that was 14% of the operator's CPU
/// (measured with `perf`). The operator's reconciles carry their own span, with the same
/// object, so nothing is lost from the logs; kube-runtime's controller logs nothing at INFO.
const KUBE_RUNTIME_CONTROLLER: &str = "kube_runtime::controller=warn";

/// The filter `--log-level` asks for. `filter` was checked when the flags were parsed; an
/// invalid one falls back to `info`.
fn filter(filter: &str) -> EnvFilter {
    let parsed = EnvFilter::builder()
        .parse(filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    match KUBE_RUNTIME_CONTROLLER.parse() {
        Ok(quiet) if !filter.contains("kube_runtime") => parsed.add_directive(quiet),
        _ => parsed,
    }
}

/// Installs the global subscriber.
pub fn init(log_level: &str, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(log_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second initialisation (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Whether kube-runtime's per-reconcile INFO span is enabled under `log_level`, and an
    /// INFO span of the operator's.
    fn enabled(log_level: &str) -> (bool, bool) {
        let subscriber = tracing_subscriber::registry().with(filter(log_level));
        tracing::subscriber::with_default(subscriber, || {
            let kube =
                tracing::info_span!(target: "kube_runtime::controller", "reconciling object");
            let ours = tracing::info_span!("reconcile");
            (!kube.is_disabled(), !ours.is_disabled())
        })
    }

    #[test]
    fn kube_runtimes_per_reconcile_span_is_off_unless_asked_for() {
        assert_eq!(enabled("info"), (false, true));
        assert_eq!(enabled("debug"), (false, true));
        assert_eq!(enabled("info,kube_runtime=debug"), (true, true));
        assert_eq!(enabled("not a filter ["), (false, true));
    }
}

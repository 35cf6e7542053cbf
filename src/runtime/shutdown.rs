//! SIGTERM / SIGINT → a [`CancellationToken`]. A second signal exits at once.

use tokio_util::sync::CancellationToken;

/// Exit code used when a second signal cuts a graceful shutdown short (128 + SIGINT).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Returns a token cancelled on the first SIGTERM or SIGINT; a second one ends the process
/// at once with [`FORCED_EXIT_CODE`]. Must be called within a tokio runtime.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        cancel.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "second signal: exiting at once");
        std::process::exit(FORCED_EXIT_CODE);
    });
    Ok(token)
}

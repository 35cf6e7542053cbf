//! The README's demo command runs to the first refresh of every access token.

use std::process::Command;

#[test]
fn the_demo_runs_to_the_first_refresh() {
    // The demo finds the control plane itself (building it on first use) and the operator
    // binary beside its own executable.
    let out = Command::new(env!("CARGO_BIN_EXE_gebeta-demo"))
        .args([
            "--token-ttl",
            "9",
            "--refreshes",
            "1",
            "--timeout",
            "240",
            "--namespace",
            "demo-test",
        ])
        .output()
        .expect("run gebeta-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "GebetaServiceAccount/maps-client",
        "Ready=True",
        "GebetaAccessToken/maps-access-token",
        "GebetaAccessToken/dashboard-access-token",
        "token refreshed into Secret maps-access-token",
        "GET /route with it -> 200",
        "every access token was refreshed 1 time(s) before it expired",
    ] {
        assert!(
            stdout.contains(expected),
            "the demo output lacks {expected:?}:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("-> 401"),
        "a token from a Secret was rejected:\n{stdout}"
    );
}

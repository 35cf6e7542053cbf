//! The README's demo command runs to the first refresh of every access token, and ends with
//! a plot of the refresh margins it saw.

use std::process::Command;

#[test]
fn the_demo_runs_to_the_first_refresh() {
    // The demo finds the control plane itself (building it on first use) and the operator
    // binary beside its own executable.
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("margins.svg");
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
            "--plot",
        ])
        .arg(&plot)
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
    // The last line names the plot; it has a point per refresh of each token (one here, as
    // the demo stops once every token was refreshed once) and a legend entry per token.
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("refresh margins (") && last.ends_with(&plot.display().to_string()),
        "the demo does not end with the plot's path: {last:?}"
    );
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for name in [
        "GebetaAccessToken/maps-access-token (",
        "GebetaAccessToken/dashboard-access-token (",
    ] {
        assert!(svg.contains(name), "the plot's legend lacks {name:?}");
    }
    let points = svg.matches("<circle").count();
    // One legend marker per token besides the points.
    assert!(
        points >= 2 + 2,
        "expected at least one point per token, found {points} circles"
    );
}

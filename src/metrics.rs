//! Prometheus metrics of the operator, served on the admin server's `/metrics`.
//!
//! Label values are bounded (controller names, result labels, endpoint labels, error labels);
//! the only per-object series is the access-token expiry gauge, removed with its object.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{controllers::reason, gebeta::RequestObserver};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlagLabels {
    pub flag: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub controller: &'static str,
    pub ready: &'static str,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub gebeta_requests: Family<RequestLabels, Counter>,
    pub gebeta_request_duration: Family<EndpointLabels, Histogram>,
    pub token_expiry: Family<ObjectLabels, Gauge>,
    pub refresh_failures: Family<ReasonLabels, Counter>,
    pub objects_ready: Family<ReadyLabels, Gauge>,
    pub leader: Gauge,
    pub retire_failures: Counter,
    pub refreshes_overdue: Gauge,
    pub refresh_oldest_overdue: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Written only by the upstream audit (`--audit-interval`): no series while it is off.
    pub upstream_accounts: Family<ClassLabels, Gauge>,
    pub upstream_accounts_flagged: Family<FlagLabels, Gauge>,
    pub upstream_audit_last_success: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gebeta_operator");
        let metrics = Metrics {
            reconciles: Family::default(),
            reconcile_duration: Family::new_with_constructor(latency_histogram),
            gebeta_requests: Family::default(),
            gebeta_request_duration: Family::new_with_constructor(latency_histogram),
            token_expiry: Family::default(),
            refresh_failures: Family::default(),
            objects_ready: Family::default(),
            leader: Gauge::default(),
            retire_failures: Counter::default(),
            refreshes_overdue: Gauge::default(),
            refresh_oldest_overdue: Gauge::default(),
            upstream_accounts: Family::default(),
            upstream_accounts_flagged: Family::default(),
            upstream_audit_last_success: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconciliations by controller and result",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciliations by controller",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "gebeta_requests",
            "Gebeta API requests by endpoint and outcome (status class or error label)",
            metrics.gebeta_requests.clone(),
        );
        registry.register(
            "gebeta_request_duration_seconds",
            "Latency of Gebeta API requests by endpoint",
            metrics.gebeta_request_duration.clone(),
        );
        registry.register(
            "access_token_expiry_timestamp_seconds",
            "Expiry time (Unix seconds) of the access token held in each GebetaAccessToken's Secret",
            metrics.token_expiry.clone(),
        );
        registry.register(
            "refresh_failures",
            "Failed access-token refreshes by reason",
            metrics.refresh_failures.clone(),
        );
        registry.register(
            "objects",
            "Objects by controller and Ready state",
            metrics.objects_ready.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            metrics.leader.clone(),
        );
        registry.register(
            "retire_failures",
            "Failed attempts to retire a replaced service account (it stays usable meanwhile)",
            metrics.retire_failures.clone(),
        );
        registry.register(
            "refreshes_overdue",
            "Access-token refreshes (and other writes) that are due but wait for capacity",
            metrics.refreshes_overdue.clone(),
        );
        registry.register(
            "refresh_oldest_overdue_seconds",
            "How long the longest-waiting due access-token refresh has waited for capacity",
            metrics.refresh_oldest_overdue.clone(),
        );
        registry.register(
            "upstream_accounts",
            "The organization's upstream accounts by class (managed, orphan, unmanaged), as of the last upstream audit (--audit-interval)",
            metrics.upstream_accounts.clone(),
        );
        registry.register(
            "upstream_accounts_flagged",
            "Upstream accounts by flag (revoked, suspended, admin, excess-scopes, stale, unknown-values), as of the last upstream audit",
            metrics.upstream_accounts_flagged.clone(),
        );
        registry.register(
            "upstream_audit_last_success_timestamp_seconds",
            "When the last upstream audit succeeded (Unix seconds)",
            metrics.upstream_audit_last_success.clone(),
        );
        // Known label values start at zero, so the series exist (and rate() works) before the
        // first event.
        for controller in ["service_account", "access_token"] {
            metrics.set_objects(controller, 0, 0);
            let _ = metrics.reconciles.get_or_create(&ReconcileLabels {
                controller,
                result: "ok".into(),
            });
            // Also the latency histogram: without it the family is missing from /metrics
            // until a reconcile has finished, and a scrape in between looks like a broken
            // exporter (the admin-server test caught one under load).
            let _ = metrics
                .reconcile_duration
                .get_or_create(&ControllerLabels { controller });
        }
        for reason in reason::CALL_FAILURES
            .into_iter()
            .chain([reason::TOKEN_EXPIRED])
        {
            let _ = metrics.refresh_failures.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn observe_reconcile(&self, controller: &'static str, result: &str, elapsed: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller,
                result: result.to_string(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(elapsed.as_secs_f64());
    }

    pub fn set_token_expiry(&self, namespace: &str, name: &str, unix_seconds: i64) {
        let labels = ObjectLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.token_expiry.get_or_create(&labels).set(unix_seconds);
    }

    pub fn forget_token(&self, namespace: &str, name: &str) {
        self.token_expiry.remove(&ObjectLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }

    pub fn refresh_failed(&self, reason: &str) {
        self.refresh_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn retire_failed(&self) {
        self.retire_failures.inc();
    }

    pub fn set_objects(&self, controller: &'static str, ready: usize, not_ready: usize) {
        self.objects_ready
            .get_or_create(&ReadyLabels {
                controller,
                ready: "true",
            })
            .set(ready as i64);
        self.objects_ready
            .get_or_create(&ReadyLabels {
                controller,
                ready: "false",
            })
            .set(not_ready as i64);
    }
}

impl Metrics {
    /// The counts of one upstream audit (every class and flag, zeros included).
    pub fn set_upstream_audit(
        &self,
        classes: &std::collections::BTreeMap<&'static str, usize>,
        flags: &std::collections::BTreeMap<&'static str, usize>,
        unix_seconds: i64,
    ) {
        for (class, n) in classes {
            self.upstream_accounts
                .get_or_create(&ClassLabels { class })
                .set(*n as i64);
        }
        for (flag, n) in flags {
            self.upstream_accounts_flagged
                .get_or_create(&FlagLabels { flag })
                .set(*n as i64);
        }
        self.upstream_audit_last_success.set(unix_seconds);
    }
}

impl RequestObserver for Metrics {
    fn observe(&self, endpoint: &'static str, outcome: &str, elapsed: Duration) {
        self.gebeta_requests
            .get_or_create(&RequestLabels {
                endpoint,
                outcome: outcome.to_string(),
            })
            .inc();
        self.gebeta_request_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_before_the_first_event() {
        let text = Metrics::new().encode();
        for series in [
            r#"gebeta_operator_reconciles_total{controller="access_token",result="ok"} 0"#,
            r#"gebeta_operator_reconcile_duration_seconds_count{controller="access_token"} 0"#,
            r#"gebeta_operator_reconcile_duration_seconds_count{controller="service_account"} 0"#,
        ] {
            assert!(text.contains(series), "missing {series} in:\n{text}");
        }
    }

    #[test]
    fn exports_the_documented_series() {
        let metrics = Metrics::new();
        metrics.observe_reconcile("access_token", "ok", Duration::from_millis(3));
        metrics.observe("auth", "2xx", Duration::from_millis(20));
        metrics.set_token_expiry("ns", "tok", 1_800_000_000);
        metrics.refresh_failed("UpstreamUnavailable");
        metrics.set_objects("service_account", 2, 1);
        metrics.leader.set(1);
        metrics.refreshes_overdue.set(3);
        metrics.retire_failed();
        metrics.refresh_oldest_overdue.set(1.5);
        let text = metrics.encode();
        for series in [
            r#"gebeta_operator_reconciles_total{controller="access_token",result="ok"} 1"#,
            r#"gebeta_operator_reconcile_duration_seconds_count{controller="access_token"} 1"#,
            r#"gebeta_operator_gebeta_requests_total{endpoint="auth",outcome="2xx"} 1"#,
            r#"gebeta_operator_gebeta_request_duration_seconds_count{endpoint="auth"} 1"#,
            r#"gebeta_operator_access_token_expiry_timestamp_seconds{namespace="ns",name="tok"} 1800000000"#,
            r#"gebeta_operator_refresh_failures_total{reason="UpstreamUnavailable"} 1"#,
            r#"gebeta_operator_refresh_failures_total{reason="TokenExpired"} 0"#,
            r#"gebeta_operator_reconciles_total{controller="service_account",result="ok"} 0"#,
            r#"gebeta_operator_objects{controller="service_account",ready="false"} 1"#,
            "gebeta_operator_leader 1",
            "gebeta_operator_refreshes_overdue 3",
            "gebeta_operator_retire_failures_total 1",
            "gebeta_operator_refresh_oldest_overdue_seconds 1.5",
        ] {
            assert!(text.contains(series), "missing {series} in:\n{text}");
        }
        assert!(
            !text.contains("gebeta_operator_upstream_accounts{"),
            "no audit series while the audit is off"
        );
        let classes = [("managed", 3), ("orphan", 1), ("unmanaged", 2)].into();
        let flags = [("admin", 1), ("revoked", 0)].into();
        metrics.set_upstream_audit(&classes, &flags, 1_800_000_000);
        let text = metrics.encode();
        for series in [
            r#"gebeta_operator_upstream_accounts{class="orphan"} 1"#,
            r#"gebeta_operator_upstream_accounts{class="managed"} 3"#,
            r#"gebeta_operator_upstream_accounts_flagged{flag="admin"} 1"#,
            r#"gebeta_operator_upstream_accounts_flagged{flag="revoked"} 0"#,
            "gebeta_operator_upstream_audit_last_success_timestamp_seconds 1800000000",
        ] {
            assert!(text.contains(series), "missing {series} in:\n{text}");
        }
        metrics.forget_token("ns", "tok");
        assert!(!metrics.encode().contains(r#"name="tok""#));
    }
}

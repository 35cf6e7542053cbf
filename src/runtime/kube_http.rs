//! The operator's Kubernetes client: kube's own HTTP stack with a bounded connection pool.
//!
//! kube talks HTTP/1.1 to the API server, one connection per request in flight, and its
//! default pool keeps every connection a burst opened until the API server's idle timeout (90
//! s) closes it: hyper's pool has no timer of its own there, so idle connections are dropped
//! only when the server hangs up. After an apply of 1,000 objects the operator held 51 idle
//! connections (~25 KiB each) while it had nothing to do. Here the pool runs a timer: a
//! connection idle for [`POOL_IDLE_TIMEOUT`] is closed, and at most
//! [`PoolLimits::max_idle`] stay idle at once.
//!
//! The stack is the one kube builds (TLS with kube's rustls settings, timeouts, base URI,
//! retries of server errors, authentication, extra headers) without its per-request debug
//! spans. Configurations that need what only kube's builder can do (an HTTP or SOCKS proxy, a
//! client certificate from an exec plugin, which carries an expiry only kube can read) get
//! kube's default client, with its unbounded pool.

use std::time::Duration;

use hyper_timeout::TimeoutConnector;
use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use kube::{
    Config,
    client::{Body, ClientBuilder, ConfigExt, retry::RetryPolicy},
};
use tower::{BoxError, ServiceBuilder, retry::RetryLayer};

/// How long a connection may stay idle in the pool before it is closed: long enough that a
/// steady trickle of refreshes (10,000 tokens of 15 minutes: ~20 requests a second) reuses
/// its connections, short enough that a burst's connections are gone half a minute after it.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many connections the pool keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Idle connections kept at most; more are closed as soon as they go idle.
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl PoolLimits {
    /// Room for every reconcile of both controllers in flight, plus the lease and events,
    /// so that a busy operator does not close and reopen connections (each a TLS handshake
    /// the API server pays for) between two requests.
    pub fn for_reconciles(max_concurrent_reconciles: u16) -> Self {
        Self {
            max_idle: 2 * usize::from(max_concurrent_reconciles) + 4,
            idle_timeout: POOL_IDLE_TIMEOUT,
        }
    }
}

/// A client for `config` whose connection pool is bounded by `limits`, or kube's default
/// client when `config` needs a proxy or an exec plugin (see the module's documentation).
pub fn client(config: Config, limits: PoolLimits) -> Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
        tracing::info!("proxy or exec credentials configured: kube's default HTTP client");
        return kube::Client::try_from(config);
    }

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let pool: HttpClient<_, Body> = HttpClient::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(limits.idle_timeout)
        .pool_max_idle_per_host(limits.max_idle)
        .build(connector);

    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then_some(RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(pool);
    Ok(ClientBuilder::new(service, config.default_namespace).build())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
        sync::Barrier,
    };

    use super::*;

    /// An HTTP/1.1 server that answers every request with an empty `ConfigMap` once
    /// `together` requests are in (so that the client opens that many connections), keeps
    /// each connection open until the client closes it, and counts the open ones.
    async fn server(together: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(together));
        let counter = open.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let (open, barrier) = (counter.clone(), barrier.clone());
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut first = true;
                    // One request per read is enough for these GETs without bodies.
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                        if std::mem::take(&mut first) {
                            barrier.wait().await;
                        }
                        let body =
                            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#;
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, open)
    }

    async fn open_after(open: &AtomicUsize, deadline: Duration, want: usize) -> usize {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let now = open.load(Ordering::SeqCst);
            if now <= want || tokio::time::Instant::now() >= until {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn burst(client: &kube::Client, requests: usize) {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let all = (0..requests).map(|_| api.get("c"));
        for got in futures::future::join_all(all).await {
            got.expect("the test server answers");
        }
    }

    fn config(url: &str) -> Config {
        Config::new(url.parse().unwrap())
    }

    #[tokio::test]
    async fn connections_beyond_the_idle_limit_close_when_a_burst_ends() {
        let (url, open) = server(12).await;
        let limits = PoolLimits {
            max_idle: 4,
            idle_timeout: Duration::from_secs(600),
        };
        let client = client(config(&url), limits).unwrap();
        burst(&client, 12).await;
        assert_eq!(
            open_after(&open, Duration::from_secs(10), 4).await,
            4,
            "idle connections kept after a burst of 12"
        );
        // The connections kept are reused: a new one would wait at the server's barrier.
        tokio::time::timeout(Duration::from_secs(10), burst(&client, 4))
            .await
            .expect("the kept connections answer");
        assert_eq!(open.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout() {
        let (url, open) = server(6).await;
        let limits = PoolLimits {
            max_idle: 64,
            idle_timeout: Duration::from_millis(300),
        };
        let client = client(config(&url), limits).unwrap();
        burst(&client, 6).await;
        assert_eq!(open_after(&open, Duration::from_secs(10), 0).await, 0);
    }

    #[tokio::test]
    async fn the_pool_is_sized_for_both_controllers_reconciles() {
        let limits = PoolLimits::for_reconciles(16);
        assert_eq!(limits.max_idle, 36);
        assert_eq!(limits.idle_timeout, POOL_IDLE_TIMEOUT);
    }
}

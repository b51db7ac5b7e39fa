//! The operator's HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), served
//! by hyper on the stage's tokio runtime.
//!
//! A scraper that misbehaves must not starve it: at most [`MAX_CONNECTIONS`]
//! connections are served at once (the rest wait in the listen backlog), a
//! connection that has not sent its request headers within [`TIMEOUT`], or
//! has not taken its whole answer within it, is dropped, and an accept error
//! (out of file descriptors, say) backs off instead of spinning.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::health::Health;
use crate::log::Repeats;
use crate::telemetry::Metrics;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The longest a connection may take, from accept to the last byte written.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after an accept error before the next accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut errors = Repeats::default();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                if let Some(n) = errors.hit() {
                    tracing::warn!(errors = n, "metrics endpoint: accept failed: {e}");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let answer = respond(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(TIMEOUT)
                // One request per connection: scrapers reconnect, and a held-open
                // connection would keep its permit.
                .keep_alive(false)
                .serve_connection(TokioIo::new(sock), service);
            // Bounds the writing too: a reader that never reads is dropped.
            let _ = tokio::time::timeout(TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

/// The answer to one request.
fn respond(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, metrics.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/healthz" => match health.fatal() {
            None => text(StatusCode::OK, "ok\n".into()),
            Some(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        },
        "/readyz" => match health.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

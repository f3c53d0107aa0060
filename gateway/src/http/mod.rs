//! The one HTTP listener (`[http] listen`): the status page at `/`, its JSON at `/api/status`
//! (what `archipel status` reads), and `/metrics` for Prometheus. Read-only: nothing here
//! changes the gateway, and nothing shows a key or a password (the snapshot holds none).
//!
//! The page is one embedded file with its script and style inline: a hub in a crisis has no
//! internet, so it loads nothing from anywhere else (its Content-Security-Policy says so too).

pub mod metrics;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::app::now_ms;
use crate::status::View;

/// The status page.
const PAGE: &str = include_str!("page.html");

/// Only what the page itself carries runs, and it only talks back to this gateway.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Why the listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Another program holds the address.
    #[error(
        "http.listen: {addr} is already in use (another archipel, or another program): stop it, or set [http] listen to a free address such as 127.0.0.1:{}",
        addr.port().wrapping_add(1)
    )]
    InUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Anything else (an address this machine does not have, a port below 1024 without
    /// the right).
    #[error("http.listen: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
}

/// Opens the listener, before anything else starts: a gateway that cannot show its state
/// must not run blind.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            HttpError::InUse { addr }
        } else {
            HttpError::Bind { addr, source }
        }
    })
}

/// The routes, reading `view`.
pub fn router(view: View) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(view)
}

/// Serves on `listener` until `stop` resolves.
pub fn serve(
    listener: TcpListener,
    view: View,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(view))
            .with_graceful_shutdown(stop)
            .await
        {
            warn!(%error, "the HTTP listener stopped");
        }
    })
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}

async fn status(State(view): State<View>) -> Response {
    let status = view.status(Instant::now(), now_ms()).await;
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(status)).into_response()
}

async fn metrics(State(view): State<View>) -> Response {
    let status = view.status(Instant::now(), now_ms()).await;
    let body = metrics::render(&view, &status);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        body,
    )
        .into_response()
}

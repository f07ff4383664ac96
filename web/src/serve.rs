//! The accept loop: hyper's HTTP/1 connections with a header-read timeout, at most
//! `max_connections` at once, each request told its client's address and its body time.
//!
//! `axum::serve` builds its hyper connections itself, with no timer, so it can neither time out
//! a client trickling headers nor close an idle keep-alive connection; this loop is its
//! connection handling with those added.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::limits::{BodyTimeout, ServeOptions};
use crate::state::AppState;

/// Serves [`app`](crate::app) on `listener` until `shutdown` fires, then finishes in-flight
/// requests, bounding clients as `options` says.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = crate::routes::app(state);
    // Every connection holds a permit; at shutdown, having them all back means every
    // connection has finished.
    let cap = options
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let connections = Arc::new(Semaphore::new(cap));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    loop {
        // A permit before accepting: over the cap, new connections wait in the listen backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(message = "Could not set TCP_NODELAY.", %error);
        }
        let router = router.clone();
        let body_timeout = options.body_timeout;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            request.extensions_mut().insert(BodyTimeout(body_timeout));
            router.clone().oneshot(request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut closing = false;
            let result = loop {
                tokio::select! {
                    result = connection.as_mut() => break result,
                    () = shutdown.cancelled(), if !closing => {
                        // Answers the request in flight, if any, then closes.
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            };
            if let Err(error) = result {
                // Timeouts and clients going away end up here; none is the server's failure.
                tracing::debug!(message = "Connection ended with an error.", %error, %remote);
            }
            drop(permit);
        });
    }
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    // Closed only if dropped, which it is not while this holds it.
    let _finished = connections.acquire_many(all).await;
    Ok(())
}

/// A failed accept: a connection that went away before it was accepted is nothing; anything
/// else (out of file descriptors, most often) is logged, and accepting pauses a second so a
/// persistent failure does not spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(message = "Accepting a connection failed; retrying in a second.", %error);
    tokio::time::sleep(Duration::from_secs(1)).await;
}

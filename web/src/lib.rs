//! HTTP for kiln: the REST API, the workers' execution API and the console.
//!
//! Only this crate speaks HTTP and HTML; its request and response types are its own, so the
//! engine's types can change without changing the wire format.

use axum::Router;
use axum::routing::get;

/// The HTTP application. For now it answers liveness probes; the APIs and the console are added
/// here as they land.
pub fn app() -> Router {
    Router::new().route("/healthz", get(health))
}

async fn health() -> &'static str {
    "ok"
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn health_answers_ok() {
        let response = super::app()
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_paths_are_404() {
        let response = super::app()
            .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}

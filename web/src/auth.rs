//! Bearer-token checks. Tokens are compared in constant time, and a refused request learns
//! nothing but 401.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::error::AppError;
use crate::state::AppState;

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn matches(given: Option<&str>, expected: &str) -> bool {
    given.is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
}

pub(crate) async fn require_worker_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    if matches(bearer(&request), &state.worker_token) {
        Ok(next.run(request).await)
    } else {
        Err(AppError::Unauthorized)
    }
}

pub(crate) async fn require_api_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    match &state.api_token {
        Some(token) if !matches(bearer(&request), token) => Err(AppError::Unauthorized),
        _ => Ok(next.run(request).await),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_must_match_exactly() {
        assert!(super::matches(Some("secret"), "secret"));
        assert!(!super::matches(Some("secret2"), "secret"));
        assert!(!super::matches(Some("secre"), "secret"));
        assert!(!super::matches(None, "secret"));
    }
}

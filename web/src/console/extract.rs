//! Extractors whose rejections are console error pages rather than axum's plain-text answers.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ConsoleError;

/// A URL-encoded form body.
pub(crate) struct HtmlForm<T>(pub(crate) T);

impl<S, T> FromRequest<S> for HtmlForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Form::<T>::from_request(request, state)
            .await
            .map(|axum::Form(value)| HtmlForm(value))
            .map_err(|rejection| ConsoleError::BadRequest(rejection.body_text()))
    }
}

/// A query string.
pub(crate) struct HtmlQuery<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for HtmlQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| HtmlQuery(value))
            .map_err(|rejection| ConsoleError::BadRequest(rejection.body_text()))
    }
}

/// Path parameters; a run id that is not a number is a 404, as no such run exists.
pub(crate) struct HtmlPath<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for HtmlPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| HtmlPath(value))
            .map_err(|rejection| ConsoleError::NotFound(rejection.body_text()))
    }
}

//! One entry of the route table: how `app` serves a route (its handler, who may call it, its
//! body limit) and what the OpenAPI document says of it.

use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodFilter, MethodRouter};
use schemars::JsonSchema;
use schemars::Schema;
use schemars::generate::SchemaGenerator;

use crate::limits;
use crate::state::AppState;

/// Writes one schema into the document (a `$ref` for named types).
pub(super) type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// Who may call a route: what `auth` checks in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// `auth::require_api_token`: the API token, when the server has one.
    ApiToken,
    /// `auth::require_worker_token`: the workers' token, always.
    WorkerToken,
    /// Anyone.
    Public,
}

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Post,
}

impl Method {
    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// What a route reads from the request body.
#[derive(Clone, Copy)]
pub(super) enum Body {
    None,
    /// `JsonBody`: JSON sent as `application/json`, required.
    Json(SchemaFn),
    /// `JsonOrEmpty`: JSON, or no body at all for the defaults.
    OptionalJson(SchemaFn),
    /// Bytes, streamed.
    Bytes,
}

/// What a route answers when it succeeds.
#[derive(Clone, Copy)]
pub(super) enum Reply {
    /// JSON, with this status.
    Json(u16, SchemaFn),
    /// 204 and no body.
    NoContent,
    /// Bytes, streamed, as `application/octet-stream`.
    Bytes,
    /// Bytes, streamed, with the media type recorded for them (an artifact's `text/csv`,
    /// `application/vnd.apache.parquet` …), so the document cannot name one.
    TypedBytes,
}

/// One route of `/api/v1`: how `app` serves it and how the document describes it.
pub(super) struct Route {
    pub(super) method: Method,
    /// The full path, in axum's syntax (which is OpenAPI's: `{name}`).
    pub(super) path: &'static str,
    pub(super) operation_id: &'static str,
    pub(super) summary: &'static str,
    pub(super) tag: &'static str,
    /// Who may call it.
    pub(super) access: Access,
    /// The handler's `Query<…>` type, if it has one.
    pub(super) query: Option<SchemaFn>,
    pub(super) body: Body,
    pub(super) reply: Reply,
    /// The error statuses the handler itself gives; those the extractors and `auth` give are
    /// added from the rest of the entry.
    pub(super) errors: &'static [u16],
    /// The largest body the extractors take, when not axum's default of 2 MiB.
    pub(super) body_limit: Option<usize>,
    pub(super) handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

impl Route {
    pub(super) fn new(
        method: Method,
        path: &'static str,
        operation_id: &'static str,
        tag: &'static str,
        summary: &'static str,
        handler: fn(MethodFilter) -> MethodRouter<AppState>,
    ) -> Route {
        let access = if tag == EXECUTION {
            Access::WorkerToken
        } else {
            Access::ApiToken
        };
        Route {
            method,
            path,
            operation_id,
            summary,
            tag,
            access,
            query: None,
            body: Body::None,
            reply: Reply::NoContent,
            errors: &[],
            body_limit: None,
            handler,
        }
    }

    pub(super) fn query(self, query: SchemaFn) -> Route {
        Route {
            query: Some(query),
            ..self
        }
    }

    pub(super) fn body(self, body: Body) -> Route {
        Route { body, ..self }
    }

    pub(super) fn reply(self, reply: Reply) -> Route {
        Route { reply, ..self }
    }

    pub(super) fn errors(self, errors: &'static [u16]) -> Route {
        Route { errors, ..self }
    }

    pub(super) fn body_limit(self, limit: usize) -> Route {
        Route {
            body_limit: Some(limit),
            ..self
        }
    }

    pub(super) fn public(self) -> Route {
        Route {
            access: Access::Public,
            ..self
        }
    }

    /// The handler, behind its body limit, as `app` mounts it. A JSON body is read in full,
    /// within the limit and the body time, before the handler runs (`limits::buffer_body`).
    pub(super) fn method_router(&self) -> MethodRouter<AppState> {
        let router = (self.handler)(self.method.filter());
        let limit = self.body_limit.unwrap_or(limits::AXUM_BODY_LIMIT);
        let router = match self.body {
            Body::Json(_) | Body::OptionalJson(_) => router.layer(
                axum::middleware::from_fn_with_state(limit, limits::buffer_body),
            ),
            Body::None | Body::Bytes => router,
        };
        match self.body_limit {
            Some(limit) => router.layer(DefaultBodyLimit::max(limit)),
            None => router,
        }
    }
}

pub(super) const EXECUTION: &str = "execution";

/// Workers send log chunks in requests of about 1 MiB; leave room above that.
pub(super) const EXEC_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Room for 10,000 rows of a few dozen features.
pub(super) const PREDICT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A JSON body or reply of type `T`: a `$ref` to its schema.
pub(super) fn json<T: JsonSchema>() -> SchemaFn {
    SchemaGenerator::subschema_for::<T>
}

/// A `Query<T>`: `T`'s schema itself.
pub(super) fn query<T: JsonSchema>() -> SchemaFn {
    // Inline, not a `$ref`: the document lists each property as a parameter.
    T::json_schema
}

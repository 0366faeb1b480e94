//! The error policy (docs/error-policy.md): one type, one table from error to status, one JSON
//! shape `{"error": {"code", "message"}}`. Internal errors are logged once with the trace id
//! and answered with an opaque message; their text never reaches a response.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request could not be parsed.
    BadRequest(String),
    /// 401: no credentials, or credentials that do not verify.
    Unauthorized(String),
    /// 401: a service token already spent on a state-changing request (replayed or reused).
    TokenReplayed,
    /// 403: authenticated, but not allowed.
    Forbidden(String),
    /// 403: allowed, but only after a fresh user verification (step-up: a passkey assertion
    /// within the last few minutes). A distinct code, so a client knows to re-authenticate.
    StepUpRequired(String),
    /// 404
    NotFound(String),
    /// 405: the path is known, the method is not one the contract declares on it; `allow` lists
    /// those (the `Allow` header).
    MethodNotAllowed { method: String, allow: Vec<String> },
    /// 409: conflicts with the current state.
    Conflict(String),
    /// 413
    PayloadTooLarge(String),
    /// 422: well-formed but invalid; names the field.
    Unprocessable { field: String, message: String },
    /// 429 with `Retry-After`.
    TooManyRequests { retry_after_secs: u64 },
    /// 503: a dependency is down.
    Unavailable(String),
    /// 500: anything unexpected. The source is logged, never shown.
    Internal(anyhow::Error),
}

/// How long a client should wait after a 503 before trying again: dependencies that are down
/// (the database, a peer) rarely come back within a second.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// The one error shape (API.md): `{"error": {"code", "message", "field?"}}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "invalid", "message": "must be 1 to 1000 characters", "field": "reason"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation, safe to show.
    pub message: String,
    /// The offending field, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unprocessable { field: field.into(), message: message.into() }
    }

    /// The status table: every variant, explicitly.
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::TokenReplayed => (StatusCode::UNAUTHORIZED, "token_replayed"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::StepUpRequired(_) => (StatusCode::FORBIDDEN, "step_up_required"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Unprocessable { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::BadRequest(m)
            | Self::Unauthorized(m)
            | Self::Forbidden(m)
            | Self::StepUpRequired(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::PayloadTooLarge(m)
            | Self::Unavailable(m) => m.clone(),
            Self::Unprocessable { message, .. } => message.clone(),
            Self::TokenReplayed => {
                "this service token was already used for a change; mint a fresh token for each such request".into()
            }
            Self::TooManyRequests { retry_after_secs } => {
                format!("too many requests; retry after {retry_after_secs} s")
            }
            Self::MethodNotAllowed { method, allow } => {
                format!("{method} is not served on this path; it takes {}", allow.join(", "))
            }
            Self::Internal(_) => "internal error".to_string(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, code) = self.parts();
        write!(f, "{} {code}", status.as_u16())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.parts();
        if let Self::Internal(e) = self {
            // Logged here, once, inside the request span (which carries the trace id).
            tracing::error!(error = format!("{e:#}"), "internal error");
        }
        let field = match self {
            Self::Unprocessable { field, .. } => Some(field.clone()),
            _ => None,
        };
        let mut response = HttpResponse::build(status);
        match self {
            Self::TooManyRequests { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after_secs)));
            }
            Self::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS)));
            }
            Self::MethodNotAllowed { allow, .. } => {
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    response.insert_header((header::ALLOW, v));
                }
            }
            _ => {}
        }
        if matches!(self, Self::Unauthorized(_) | Self::TokenReplayed) {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response.json(ErrorBody { error: ErrorDetail { code, message: self.public_message(), field } })
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        match e {
            crate::db::DbError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::Unavailable("database unavailable".into())
            }
            other => Self::Internal(other.into()),
        }
    }
}

/// actix's own extractor errors (bad JSON, bad query string, bad path segment) in our shape.
pub fn json_error_handler(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => {
            ApiError::PayloadTooLarge("request body too large".into())
        }
        E::ContentType => ApiError::BadRequest("expected Content-Type: application/json".into()),
        E::Deserialize(e) if e.is_data() => ApiError::Unprocessable { field: "body".into(), message: e.to_string() },
        E::Deserialize(e) => ApiError::BadRequest(format!("malformed JSON: {e}")),
        _ => ApiError::BadRequest("could not read the request body".into()),
    };
    actix_web::error::InternalError::from_response(err, api.error_response()).into()
}

pub fn query_error_handler(err: actix_web::error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = ApiError::BadRequest(format!("bad query string: {err}"));
    actix_web::error::InternalError::from_response(err, api.error_response()).into()
}

pub fn path_error_handler(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    let api = ApiError::NotFound(format!("bad path parameter: {err}"));
    actix_web::error::InternalError::from_response(err, api.error_response()).into()
}

/// The default service: 405 with `Allow` on a path the contract knows, else 404.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(wrong_method(&req).unwrap_or_else(|| ApiError::NotFound("no such route".into())))
}

/// A 405 for `req` when the service's contract declares its path with other methods.
fn wrong_method(req: &HttpRequest) -> Option<ApiError> {
    let platform = req.app_data::<actix_web::web::Data<crate::Platform>>()?;
    let allow = platform.contract.allowed(req.path())?;
    (!allow.contains(req.method())).then(|| ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allow: allow.iter().map(ToString::to_string).collect(),
    })
}

/// actix answers an undeclared method on a resource it routes with a bare 405 (no body; `Allow`
/// from the resource's routes): this middleware answers it as the contract says, in the error
/// shape, with `Allow` from the document.
pub async fn method_not_allowed(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let response = next.call(req).await?;
    let ours =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || ours {
        return Ok(response.map_into_left_body());
    }
    let (req, _) = response.into_parts();
    let error = wrong_method(&req)
        .unwrap_or_else(|| ApiError::MethodNotAllowed { method: req.method().to_string(), allow: Vec::new() });
    Ok(ServiceResponse::new(req, error.error_response()).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn body(e: ApiError) -> (u16, serde_json::Value, Option<String>) {
        let r = e.error_response();
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_string());
        let bytes = to_bytes(r.into_body()).await.unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or_default(), retry)
    }

    #[actix_web::test]
    async fn internal_text_never_leaks() {
        let (status, json, _) = body(ApiError::internal(anyhow::anyhow!("password=hunter2 at db.rs:42"))).await;
        assert_eq!(status, 500);
        assert_eq!(json["error"]["code"], "internal");
        assert!(!json.to_string().contains("hunter2"));
    }

    #[actix_web::test]
    async fn every_variant_has_its_status_and_shape() {
        let cases = [
            (ApiError::BadRequest("b".into()), 400, "bad_request"),
            (ApiError::Unauthorized("u".into()), 401, "unauthorized"),
            (ApiError::TokenReplayed, 401, "token_replayed"),
            (ApiError::Forbidden("f".into()), 403, "forbidden"),
            (ApiError::StepUpRequired("s".into()), 403, "step_up_required"),
            (ApiError::NotFound("n".into()), 404, "not_found"),
            (ApiError::MethodNotAllowed { method: "PUT".into(), allow: vec!["GET".into()] }, 405, "method_not_allowed"),
            (ApiError::Conflict("c".into()), 409, "conflict"),
            (ApiError::PayloadTooLarge("p".into()), 413, "payload_too_large"),
            (ApiError::invalid("email", "not an email"), 422, "invalid"),
            (ApiError::TooManyRequests { retry_after_secs: 7 }, 429, "rate_limited"),
            (ApiError::Unavailable("d".into()), 503, "unavailable"),
        ];
        for (e, status, code) in cases {
            let (s, json, retry) = body(e).await;
            assert_eq!((s, json["error"]["code"].as_str()), (status, Some(code)));
            assert!(json["error"]["message"].is_string());
            if s == 429 {
                assert_eq!(retry.as_deref(), Some("7"));
            }
            if s == 503 {
                assert_eq!(retry.as_deref(), Some("5"));
            }
            if s == 422 {
                assert_eq!(json["error"]["field"], "email");
            }
        }
    }
}

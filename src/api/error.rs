//! How errors leave the HTTP layer: a status, a stable code and a message.

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Everything that ends a request before (or instead of) a normal answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("no such endpoint: {path}")]
    NotFound { path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        method: Method,
        path: String,
        allow: &'static str,
    },
    #[error("this needs a user name and password (HTTP basic authentication) that the node's users file accepts")]
    Unauthorized,
    #[error("user {user:?} does not have the {perm:?} permission this needs")]
    Forbidden { user: String, perm: &'static str },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotPrimary(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::CertificationFailed(_) => StatusCode::CONFLICT,
            ApiError::OutcomeUnknown(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable name clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotPrimary(_) => "not_primary",
            ApiError::CertificationFailed(_) => "certification_failed",
            ApiError::OutcomeUnknown(_) => "outcome_unknown",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl HttpError {
    fn status(&self) -> StatusCode {
        match self {
            HttpError::Api(e) => e.status(),
            HttpError::NotFound { .. } => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden { .. } => StatusCode::FORBIDDEN,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            HttpError::Api(e) => e.code(),
            HttpError::NotFound { .. } => "not_found",
            HttpError::MethodNotAllowed { .. } => "method_not_allowed",
            HttpError::Unauthorized => "unauthorized",
            HttpError::Forbidden { .. } => "forbidden",
        }
    }
}

pub(crate) fn bad_request(message: impl Into<String>) -> HttpError {
    HttpError::Api(ApiError::BadRequest(message.into()))
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string(), "code": self.code() });
        let mut response = (self.status(), axum::Json(body)).into_response();
        match self {
            HttpError::MethodNotAllowed { allow, .. } => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            HttpError::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"rqlite\""),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_error_has_its_documented_status_and_code() {
        let cases = [
            (ApiError::NotPrimary("x".into()), 503, "not_primary"),
            (
                ApiError::CertificationFailed("x".into()),
                409,
                "certification_failed",
            ),
            (ApiError::OutcomeUnknown("x".into()), 504, "outcome_unknown"),
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::TooLarge("x".into()), 413, "too_large"),
            (ApiError::Internal("x".into()), 500, "internal"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    #[test]
    fn method_not_allowed_carries_allow_header() {
        let response = HttpError::MethodNotAllowed {
            method: Method::GET,
            path: "/db/execute".into(),
            allow: "POST, OPTIONS",
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "POST, OPTIONS");
    }
}

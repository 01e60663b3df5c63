//! `ApiJson`: the JSON body extractor: 401 without a valid token, 413 past the body limit, 400 with the field path on a decoding error.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

use crate::errors::ServerError;
use crate::state::ServerState;

/// A JSON request body.
pub(crate) struct ApiJson<T>(pub T);

/// Decodes `bytes` as `T`, naming the path of the offending field.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ServerError> {
    // serde reads a struct from a JSON array too (fields by position); every
    // request body is an object, so anything else is refused before decoding.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        _ => {
            return Err(ServerError::bad_request(
                "invalid request body: expected a JSON object",
                None,
            ));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = (!matches!(path.as_str(), "." | "?" | "")).then_some(path);
        ServerError::BadRequest {
            detail: format!("invalid request body: {inner}"),
            field,
        }
    })
}

/// A `Content-Type` other than JSON (`application/json`, `application/*+json`,
/// with parameters) is refused with 415; a body without one is read as JSON.
fn check_content_type(headers: &axum::http::HeaderMap) -> Result<(), ServerError> {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(ServerError::UnsupportedMediaType(text.into_owned()))
    }
}

/// The body's bytes; 413 past the body limit. The caller is authenticated first
/// (any role; the handler checks the role): a request without a valid token gets
/// 401, never a hint about its body.
async fn read(req: Request, state: &ServerState) -> Result<Bytes, ServerError> {
    crate::auth::authorize(state, req.headers(), deploy_api::Role::Viewer).await?;
    check_content_type(req.headers())?;
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServerError::PayloadTooLarge {
                limit: state.config().max_body_bytes,
            }
        } else {
            ServerError::bad_request("cannot read the request body", None)
        }
    })
}

impl<T: DeserializeOwned> FromRequest<ServerState> for ApiJson<T> {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &ServerState) -> Result<Self, Self::Rejection> {
        let bytes = read(req, state).await?;
        Ok(Self(decode(&bytes)?))
    }
}

/// A JSON body that may be absent (empty body = `T::default()`).
pub(crate) struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<ServerState> for OptionalJson<T> {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &ServerState) -> Result<Self, Self::Rejection> {
        let bytes = read(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        Ok(Self(decode(&bytes)?))
    }
}

//! Reading request input with errors that name what is wrong: JSON, query
//! and path extractor settings, and a JSON object read field by field.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::web;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// JSON bodies: at most `limit` bytes; a malformed body is a 400 that says
/// why, a larger one a 413.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, _req| {
            match err {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => ApiError::TooLarge { limit },
                JsonPayloadError::ContentType => ApiError::bad_request(
                    "unsupported_media_type",
                    "send the body as JSON, with `Content-Type: application/json`",
                ),
                JsonPayloadError::Deserialize(e) => ApiError::bad_request(
                    "invalid_json",
                    format!("the body is not valid JSON: {e}"),
                ),
                other => ApiError::bad_request(
                    "body_unreadable",
                    format!("the request body could not be read: {other}"),
                ),
            }
            .into()
        })
}

/// Query strings: an unknown or malformed parameter is a 400.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let QueryPayloadError::Deserialize(e) = err else {
            return ApiError::bad_request("invalid_query", err.to_string()).into();
        };
        ApiError::bad_request("invalid_query", format!("invalid query string: {e}")).into()
    })
}

/// Path segments: a malformed id is a 400.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        let PathError::Deserialize(e) = err else {
            return ApiError::bad_request("invalid_path", err.to_string()).into();
        };
        ApiError::bad_request("invalid_path", format!("malformed path: {e}")).into()
    })
}

/// A JSON object body, taken apart field by field so that every error names
/// its field; [`Object::finish`] refuses the fields nobody took.
#[derive(Debug)]
pub struct Object {
    map: Map<String, Value>,
}

impl Object {
    /// The body, which must be a JSON object.
    pub fn new(body: Value) -> Result<Self, ApiError> {
        match body {
            Value::Object(map) => Ok(Self { map }),
            _ => Err(ApiError::bad_request(
                "invalid_json",
                "the body must be a JSON object",
            )),
        }
    }

    /// Takes `key` out (`None` when absent).
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    /// Takes `key` out as a `T`; an absent key is `None`, a value of the
    /// wrong shape a 422 naming `path`.
    pub fn take_as<T: DeserializeOwned>(
        &mut self,
        key: &str,
        path: &str,
    ) -> Result<Option<T>, ApiError> {
        self.take(key).map(|v| typed(path, v)).transpose()
    }

    /// Takes every remaining field out, in key order.
    pub fn drain(&mut self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.map).into_iter().collect()
    }

    /// Refuses the first field nobody took.
    pub fn finish(self, context: &str) -> Result<(), ApiError> {
        match self.map.keys().next() {
            Some(key) => Err(ApiError::unknown_field(join(context, key))),
            None => Ok(()),
        }
    }
}

/// `value` as a `T`, or a 422 naming `path`.
pub fn typed<T: DeserializeOwned>(path: &str, value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::invalid(path, e.to_string()))
}

/// `context.key`, or `key` at the top level.
pub fn join(context: &str, key: &str) -> String {
    if context.is_empty() {
        key.to_owned()
    } else {
        format!("{context}.{key}")
    }
}

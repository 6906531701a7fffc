//! Errors: HubSpot-shaped API error bodies ([`ApiError`], crate-private) and the
//! public errors of starting the simulator and of its control API.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::{Map, Value, json};

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listening socket could not be bound.
    #[error("failed to bind the simulator's listener")]
    Bind(#[source] std::io::Error),
    /// The webhook delivery HTTP client could not be built.
    #[error("failed to build the webhook delivery HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The configuration is inconsistent.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}

/// Why a control operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such portal.
    #[error("portal {0} does not exist")]
    UnknownPortal(u64),
    /// No such contact in the portal.
    #[error("contact {0} does not exist")]
    UnknownContact(u64),
    /// The request contradicts the current state (a duplicate email, …).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is malformed or names something that does not exist.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The control API could not be reached (HTTP client only).
    #[error("control API request failed")]
    Http(#[from] reqwest::Error),
    /// The control API answered with an unexpected status (HTTP client only).
    #[error("control API answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The response body.
        body: String,
    },
}

impl ControlError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::UnknownPortal(_) | Self::UnknownContact(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Http(_) => StatusCode::BAD_GATEWAY,
            Self::Status { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

/// HubSpot's error content type (docs/hubspot-sim.md, "Errors").
pub(crate) const JSON_UTF8: &str = "application/json;charset=utf-8";

/// An error answered by the fake HubSpot API. `correlationId` is added when it
/// is rendered, so constructors need no access to the id generator.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) body: Map<String, Value>,
}

impl ApiError {
    /// The standard shape: `{status:"error", message, correlationId, category}`.
    pub(crate) fn new(status: StatusCode, category: &str, message: impl Into<String>) -> Self {
        let mut body = Map::new();
        body.insert("status".into(), "error".into());
        body.insert("message".into(), Value::String(message.into()));
        body.insert("category".into(), category.into());
        Self { status, body }
    }

    /// Any other body (OAuth and rate-limit errors have their own shapes).
    pub(crate) fn raw(status: StatusCode, body: Value) -> Self {
        let body = match body {
            Value::Object(map) => map,
            other => {
                let mut map = Map::new();
                map.insert("message".into(), other);
                map
            }
        };
        Self { status, body }
    }

    pub(crate) fn with(mut self, key: &str, value: Value) -> Self {
        self.body.insert(key.into(), value);
        self
    }

    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    /// HubSpot's 404 for a contact, with its double space (docs/hubspot-sim.md, "Errors").
    pub(crate) fn object_not_found(raw_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Object not found.  objectId are usually numeric.",
        )
        .with("context", json!({ "id": [raw_id] }))
    }

    pub(crate) fn contact_exists(existing_id: u64) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!("Contact already exists. Existing ID: {existing_id}"),
        )
    }

    pub(crate) fn invalid_json(err: &serde_json::Error) -> Self {
        Self::validation(format!(
            "Invalid input JSON on line {}, column {}: {err}",
            err.line(),
            err.column()
        ))
    }

    pub(crate) fn batch_too_large(n: usize) -> Self {
        Self::validation(format!(
            "Batch input limit exceeded: {n} inputs were sent, and at most 100 are allowed."
        ))
    }

    pub(crate) fn not_found_path() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Resource not found",
        )
    }

    /// Renders the body, adding `correlationId` when the shape has one.
    pub(crate) fn into_response(mut self, correlation_id: String) -> HttpResponse {
        if !self.body.contains_key("correlationId") {
            self.body.insert(
                "correlationId".into(),
                Value::String(correlation_id.clone()),
            );
        }
        let body = serde_json::to_vec(&Value::Object(self.body)).unwrap_or_default();
        HttpResponse::build(self.status)
            .content_type(JSON_UTF8)
            .insert_header(("X-HubSpot-Correlation-Id", correlation_id))
            .body(body)
    }
}

/// One entry of a `PROPERTY_DOESNT_EXIST`-style validation failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PropertyError {
    pub(crate) name: String,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl PropertyError {
    pub(crate) fn missing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            code: "PROPERTY_DOESNT_EXIST",
            message: format!("Property \"{name}\" does not exist"),
        }
    }

    pub(crate) fn read_only(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            code: "READ_ONLY_VALUE",
            message: format!("\"{name}\" is a read only property; its value cannot be set."),
        }
    }

    pub(crate) fn invalid_option(name: &str, value: &str, allowed: &[String]) -> Self {
        Self {
            name: name.to_owned(),
            code: "INVALID_OPTION",
            message: format!(
                "{value} was not one of the allowed options: [{}]",
                allowed.join(", ")
            ),
        }
    }

    pub(crate) fn invalid_email(value: &str) -> Self {
        Self {
            name: "email".to_owned(),
            code: "INVALID_EMAIL",
            message: format!("Email address {value} is invalid"),
        }
    }

    pub(crate) fn invalid_value(name: &str, code: &'static str, message: String) -> Self {
        Self {
            name: name.to_owned(),
            code,
            message,
        }
    }
}

/// HubSpot's body for invalid property values (docs/hubspot-sim.md, "Errors"): the
/// individual failures are a JSON array *inside* the message string.
pub(crate) fn property_errors(portal_id: u64, errors: &[PropertyError]) -> ApiError {
    let items: Vec<Value> = errors
        .iter()
        .map(|e| {
            json!({
                "isValid": false,
                "message": e.message,
                "error": e.code,
                "name": e.name,
                "localizedErrorMessage": e.message,
                "portalId": portal_id,
            })
        })
        .collect();
    let list = serde_json::to_string(&items).unwrap_or_default();
    ApiError::validation(format!("Property values were not valid: {list}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_error_body_embeds_the_list_in_the_message() {
        let err = property_errors(891_936_587, &[PropertyError::missing("missing")]);
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.body["category"], "VALIDATION_ERROR");
        let message = err.body["message"].as_str().expect("message");
        let list = message
            .strip_prefix("Property values were not valid: ")
            .expect("prefix");
        let items: Vec<Value> = serde_json::from_str(list).expect("embedded JSON");
        assert_eq!(items[0]["error"], "PROPERTY_DOESNT_EXIST");
        assert_eq!(items[0]["message"], "Property \"missing\" does not exist");
    }
}

//! The OpenAPI document, collected by utoipa from the very
//! [`routes::configure`] that mounts the handlers: a route cannot be served
//! without being documented, nor documented without being served.

use actix_web::App;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt as _;

use crate::routes;

/// The name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "leadsync API",
        description = "The platform's REST API: leads, integration settings, per-lead sync status, \
                       statistics and dead letters. Every `/v1` route takes a bearer token scoped \
                       to one integration and to a scope, `read`, `write` or `admin` \
                       (`leadsync api-token create`).",
    ),
    modifiers(&BearerScheme),
    components(schemas(crate::error::ErrorBody)),
    tags(
        (name = "leads", description = "The integration's leads; writes are pushed to HubSpot"),
        (name = "integration", description = "The integration's sync settings"),
        (name = "sync", description = "Sync status, statistics and dead letters"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `leadsync api-token create --integration NAME --scope \
                         SCOPE`. The scope each operation needs is listed in its `security` \
                         requirement: `read` (the GET routes), `write` (also creating, \
                         updating and deleting leads) or `admin` (also replacing the settings \
                         and replaying dead letters); each scope includes the ones before it. \
                         A token of a smaller scope gets 403 `insufficient_scope`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, serialised once at start-up.
#[derive(Debug, Clone)]
pub struct Document {
    json: String,
}

impl Document {
    /// Collects and serialises the document.
    pub fn build() -> anyhow::Result<Self> {
        Ok(Self {
            json: serde_json::to_string(&openapi())?,
        })
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// The OpenAPI document of every mounted route.
pub fn openapi() -> OpenApiDoc {
    let (_, doc) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    doc
}

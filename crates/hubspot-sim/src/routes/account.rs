//! Account information API v3 (docs/hubspot-sim.md, "Account information"):
//! which account a token belongs to.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::{Reply, finish, gate};
use crate::state::Sim;
use crate::stats::Endpoint;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/account-info/v3/details", web::get().to(details));
}

/// `GET /account-info/v3/details`: the token's account, with the fields
/// HubSpot documents (fixed values but `portalId`).
async fn details(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    let ctx = match gate(&sim, &req, Endpoint::AccountDetails) {
        Ok(ctx) => ctx,
        Err(resp) => return *resp,
    };
    let result = Reply::json(
        StatusCode::OK,
        &json!({
            "portalId": ctx.portal.id,
            "accountType": "STANDARD",
            "timeZone": "US/Eastern",
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": "-05:00",
            "utcOffsetMilliseconds": -18_000_000,
            "uiDomain": "app.hubspot.com",
            "dataHostingLocation": "na1",
        }),
    );
    finish(&sim, &ctx, result)
}

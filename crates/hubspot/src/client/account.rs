//! The account information API: which HubSpot account a token belongs to.
//!
//! `GET /account-info/v3/details` answers with the `portalId` of the account
//! the bearer token was issued for ("Retrieve account details",
//! <https://developers.hubspot.com/docs/api-reference/legacy/account/account-information/get-account-details>).

use leadsync_domain::PortalId;
use secrecy::SecretString;
use serde::Deserialize;

use super::{Call, Client, Operation, decode};
use crate::error::HubSpotError;

/// The account a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDetails {
    /// The account (portal, "Hub ID").
    pub portal: PortalId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DetailsWire {
    portal_id: u64,
}

impl Client {
    /// Asks HubSpot which account `token` (a private app's token, or an OAuth
    /// access token) belongs to. The call is made before the account is
    /// known, so it spends no account's rate-limit budget here; it is one
    /// call, made once when an account is connected.
    ///
    /// # Errors
    /// A refused token ([`HubSpotError::Unauthorized`]), a token without the
    /// access this call needs ([`HubSpotError::Permanent`] with status 403),
    /// or a transport failure after the retries.
    pub async fn account_details(
        &self,
        token: &SecretString,
    ) -> Result<AccountDetails, HubSpotError> {
        let call = Call::get(
            Operation::AccountDetails,
            &["account-info", "v3", "details"],
        )
        .bearer(token);
        let bytes = self.execute(None, &call).await?;
        let wire: DetailsWire = decode(Operation::AccountDetails, &bytes)?;
        Ok(AccountDetails {
            portal: PortalId::new(wire.portal_id),
        })
    }
}

//! `access_token_info`: the account and app an OAuth access token belongs to.

use leadsync_domain::AppId;
use leadsync_hubspot::{Client, HubSpotError};
use leadsync_hubspot_sim::AuthorizeRequest;
use secrecy::SecretString;

use crate::helpers::{PORTAL, config, portal, sim};

#[tokio::test]
async fn token_info_names_the_portal_and_app_and_an_unknown_token_is_not_found() {
    // Arrange
    let sim = sim().await;
    let client = Client::builder(config(&sim.base_url()))
        .build()
        .expect("client builds");
    let code = sim.control().authorize(AuthorizeRequest {
        portal_id: PORTAL,
        user_id: None,
        redirect_uri: None,
    });
    let tokens = client
        .exchange_code(&code.code, "")
        .await
        .expect("code exchange succeeds");

    // Act
    let info = client.access_token_info(&tokens.access_token).await;
    let unknown = client
        .access_token_info(&SecretString::from("no-such-token"))
        .await;

    // Assert
    let info = info.expect("token info");
    assert_eq!(info.portal, portal());
    assert_eq!(info.app_id, Some(AppId::new(1_160_452)));
    assert!(info.scopes.iter().any(|s| s == "crm.objects.contacts.read"));
    assert!(info.expires_in > 0);
    assert!(
        matches!(unknown, Err(HubSpotError::NotFound)),
        "{unknown:?}"
    );
    sim.stop().await;
}

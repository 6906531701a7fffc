//! `leadsync setup`: creates in HubSpot what the sync of a connected account
//! needs — the contact property `lead_source_system`, the app's webhook target
//! URL and one active subscription per event type the worker handles — and
//! prints what it created and what existed already. It only adds or switches
//! on: a second run changes nothing (docs/setup.md).

use std::fmt;

use anyhow::Context as _;
use leadsync_domain::{AppId, FieldMapping, PortalId, SubscriptionType};
use leadsync_hubspot::{
    Client, DeveloperApp, HubSpotError, NewSubscription, PropertyEnsured, SOURCE_SYSTEM_PROPERTY,
    Subscription, Throttling, WebhookSettings,
};
use leadsync_runtime::{ConfigError, Settings};
use leadsync_store::Integration;
use leadsync_store::integrations::{self, AuthMode};
use leadsync_worker::contact_event::HANDLED_TYPES;
use leadsync_worker::startup::{self, Connected};

/// The ingester's route for one integration's deliveries.
const WEBHOOK_PATH: &str = "/webhooks/hubspot";

/// What setup did with one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// It did not exist; setup created it.
    Created,
    /// It existed as wanted; nothing was sent.
    Existed,
    /// It existed and was changed (why, e.g. `activated`).
    Updated(String),
    /// HubSpot has no API for it with this kind of connection: the operator
    /// sets it by hand (private apps' webhooks).
    Manual,
}

/// One item setup looked after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it is, e.g. `subscription contact.propertyChange (email)`.
    pub item: String,
    /// What setup did.
    pub change: Change,
}

/// What a run of setup did.
#[derive(Debug, Clone)]
pub struct SetupReport {
    /// The integration.
    pub integration: String,
    /// Every item, in the order handled.
    pub steps: Vec<Step>,
}

impl SetupReport {
    /// Items created.
    pub fn created(&self) -> usize {
        self.count(|c| matches!(c, Change::Created))
    }

    /// Items created or changed: zero on a second run.
    pub fn changed(&self) -> usize {
        self.count(|c| matches!(c, Change::Created | Change::Updated(_)))
    }

    /// Items left to the operator.
    pub fn manual(&self) -> usize {
        self.count(|c| matches!(c, Change::Manual))
    }

    fn count(&self, f: impl Fn(&Change) -> bool) -> usize {
        self.steps.iter().filter(|s| f(&s.change)).count()
    }
}

impl fmt::Display for SetupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "setup of integration `{}`:", self.integration)?;
        for step in &self.steps {
            match &step.change {
                Change::Created => writeln!(f, "  created   {}", step.item)?,
                Change::Existed => writeln!(f, "  existed   {}", step.item)?,
                Change::Updated(why) => writeln!(f, "  updated   {} ({why})", step.item)?,
                Change::Manual => writeln!(f, "  BY HAND   {}", step.item)?,
            }
        }
        write!(
            f,
            "{} created, {} changed, {} already in place",
            self.created(),
            self.changed() - self.created(),
            self.count(|c| matches!(c, Change::Existed))
        )?;
        if self.manual() > 0 {
            write!(
                f,
                "; {} to set by hand in the private app's settings (HubSpot has no API for a private app's webhooks)",
                self.manual()
            )?;
        }
        Ok(())
    }
}

/// Options of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetupOptions {
    /// Point the app's webhooks at `/webhooks/hubspot`, which routes every
    /// account by its portal id, instead of `/webhooks/hubspot/{integration}`:
    /// needed once several accounts have installed the same app, because an
    /// app has a single target URL.
    pub app_wide_url: bool,
}

/// The subscriptions the worker needs for `mapping`: its event types, and a
/// property change per mapped property.
pub fn wanted_subscriptions(mapping: &FieldMapping) -> Vec<NewSubscription> {
    let fixed = event_types().map(|t| NewSubscription {
        event_type: t.as_str().to_owned(),
        property_name: None,
        active: true,
    });
    let changes = mapping.properties().into_iter().map(|p| NewSubscription {
        event_type: SubscriptionType::ContactPropertyChange.as_str().to_owned(),
        property_name: Some(p.to_owned()),
        active: true,
    });
    fixed.chain(changes).collect()
}

/// The event types subscribed to once each: every one the worker handles
/// but `contact.propertyChange`, which is subscribed to per property.
pub fn event_types() -> impl Iterator<Item = &'static SubscriptionType> {
    HANDLED_TYPES
        .iter()
        .filter(|t| **t != SubscriptionType::ContactPropertyChange)
}

fn subscription_label(event_type: &str, property: Option<&str>) -> String {
    match property {
        Some(p) => format!("subscription {event_type} ({p})"),
        None => format!("subscription {event_type}"),
    }
}

/// The target URL for `integration` (or the app-wide one).
pub fn target_url(settings: &Settings, integration: &str, app_wide: bool) -> String {
    let base = &settings.application.public_base_url;
    if app_wide {
        format!("{base}{WEBHOOK_PATH}")
    } else {
        format!("{base}{WEBHOOK_PATH}/{integration}")
    }
}

/// Runs setup for the integration named `integration`, prints the report and
/// returns it.
///
/// # Errors
/// No such integration, missing configuration (`hubspot.developer_api_key`,
/// `hubspot.app_id` for OAuth-connected accounts), an existing
/// `lead_source_system` of an unusable type, a target URL that serves another
/// integration, or a HubSpot failure. Steps done before a failure stay done;
/// running setup again continues from there.
pub async fn run(
    settings: &Settings,
    integration: &str,
    options: SetupOptions,
) -> anyhow::Result<SetupReport> {
    let connected = startup::connect(settings).await?;
    let result = run_with(settings, &connected, integration, options).await;
    connected.store.close().await;
    let report = result?;
    println!("{report}");
    Ok(report)
}

async fn run_with(
    settings: &Settings,
    connected: &Connected,
    name: &str,
    options: SetupOptions,
) -> anyhow::Result<SetupReport> {
    let integration = integrations::by_name(connected.store.pool(), name)
        .await?
        .with_context(|| {
            format!(
                "no integration named `{name}`: connect the account first with `leadsync connect`"
            )
        })?;
    // Webhook configuration is checked before anything is written in HubSpot.
    let developer = match integration.auth_mode {
        AuthMode::OAuth => Some(developer_app(settings, &integration)?),
        AuthMode::PrivateApp => None,
    };
    let client = crm_client(connected, &integration).await?;
    let mut steps = vec![source_property(settings, client, integration.portal_id).await?];
    let mapping = integration
        .settings
        .mapping()
        .with_context(|| format!("the field mapping of integration `{name}` is invalid"))?;
    let wanted = wanted_subscriptions(&mapping);
    let target = target_url(settings, name, options.app_wide_url);
    match developer {
        Some(app) => {
            steps.push(ensure_target(settings, client, &app, &target, options).await?);
            steps.extend(ensure_subscriptions(client, &app, &wanted).await?);
        }
        None => {
            steps.push(Step {
                item: format!("webhook target URL {target}"),
                change: Change::Manual,
            });
            steps.extend(wanted.iter().map(|s| Step {
                item: subscription_label(&s.event_type, s.property_name.as_deref()),
                change: Change::Manual,
            }));
        }
    }
    Ok(SetupReport {
        integration: integration.name,
        steps,
    })
}

/// The public app and its developer key, for an OAuth-connected account.
fn developer_app(settings: &Settings, integration: &Integration) -> anyhow::Result<DeveloperApp> {
    let hubspot = &settings.hubspot;
    if hubspot.app_id == 0 {
        return Err(ConfigError::invalid(
            "hubspot.app_id",
            "is required to manage the app's webhooks: the public app's id",
        )
        .into());
    }
    let app_id = AppId::new(hubspot.app_id);
    if let Some(installed) = integration.app_id {
        anyhow::ensure!(
            installed == app_id,
            "integration `{}` installed HubSpot app {installed}, but hubspot.app_id is {app_id}",
            integration.name
        );
    }
    Ok(DeveloperApp {
        app_id,
        api_key: hubspot.require_developer_api_key()?.clone(),
    })
}

/// The client for the account's CRM calls: the workers' own, behind the
/// fleet-wide limiter and sharing their OAuth token cache (Redis), so setup
/// neither exceeds the account's budget nor refreshes a token a worker is
/// refreshing.
async fn crm_client<'a>(
    connected: &'a Connected,
    integration: &Integration,
) -> anyhow::Result<&'a Client> {
    let portal = integration.portal_id;
    connected.credentials.ensure([portal]).await;
    anyhow::ensure!(
        connected.credentials.is_registered(portal),
        "integration `{}` has no usable token stored: connect it again",
        integration.name
    );
    Ok(&connected.hubspot)
}

async fn source_property(
    settings: &Settings,
    client: &Client,
    portal: PortalId,
) -> anyhow::Result<Step> {
    let value = &settings.hubspot.source_system_value;
    let item = format!("contact property {SOURCE_SYSTEM_PROPERTY} with the option `{value}`");
    let change = match client
        .ensure_source_property(portal, value)
        .await
        .with_context(|| format!("setting up the contact property {SOURCE_SYSTEM_PROPERTY}"))?
    {
        PropertyEnsured::Created => Change::Created,
        PropertyEnsured::Existed => Change::Existed,
        PropertyEnsured::OptionAdded => Change::Updated(format!("added the option `{value}`")),
        PropertyEnsured::Incompatible { property_type } => anyhow::bail!(
            "HubSpot account {portal} has a contact property {SOURCE_SYSTEM_PROPERTY} of type `{property_type}`, which cannot hold `{value}`: rename or delete it in HubSpot, then run setup again"
        ),
    };
    Ok(Step { item, change })
}

async fn ensure_target(
    settings: &Settings,
    client: &Client,
    app: &DeveloperApp,
    target: &str,
    options: SetupOptions,
) -> anyhow::Result<Step> {
    let current = client
        .get_webhook_settings(app)
        .await
        .context("reading the app's webhook settings")?;
    let app_wide = target_url(settings, "", true);
    let per_integration = format!("{app_wide}/");
    let (item, change, throttling) = match current {
        None => (target.to_owned(), Change::Created, Throttling::default()),
        Some(s) if s.target_url == target => (target.to_owned(), Change::Existed, s.throttling),
        // The app-wide URL already serves this account too.
        Some(s) if !options.app_wide_url && s.target_url == app_wide => {
            return Ok(Step {
                item: format!(
                    "webhook target URL {app_wide} (app-wide: routes every account by its portal id)"
                ),
                change: Change::Existed,
            });
        }
        Some(s) if !options.app_wide_url && s.target_url.starts_with(&per_integration) => {
            anyhow::bail!(
                "the app's webhook target URL is {}, another integration's: HubSpot allows one target URL per app, so both accounts need the app-wide URL; run `leadsync setup --integration {} --app-wide-url`",
                s.target_url,
                target.rsplit('/').next().unwrap_or_default()
            )
        }
        Some(s) => (
            target.to_owned(),
            Change::Updated(format!("was {}", s.target_url)),
            s.throttling,
        ),
    };
    if change != Change::Existed {
        client
            .put_webhook_settings(
                app,
                &WebhookSettings {
                    target_url: target.to_owned(),
                    throttling,
                    created_at: None,
                    updated_at: None,
                },
            )
            .await
            .context("saving the app's webhook target URL")?;
    }
    Ok(Step {
        item: format!("webhook target URL {item}"),
        change,
    })
}

async fn ensure_subscriptions(
    client: &Client,
    app: &DeveloperApp,
    wanted: &[NewSubscription],
) -> anyhow::Result<Vec<Step>> {
    let existing = client
        .list_subscriptions(app)
        .await
        .context("listing the app's webhook subscriptions")?;
    let mut steps = Vec::with_capacity(wanted.len());
    for want in wanted {
        let item = subscription_label(&want.event_type, want.property_name.as_deref());
        let change = match find_subscription(&existing, want) {
            Some(s) => ensure_active(client, app, s, &item).await?,
            None => match client.create_subscription(app, want).await {
                Ok(_) => Change::Created,
                Err(e) if already_exists(&e) => {
                    // Created since the list: by a retry of this very call
                    // whose first answer was lost, or by a run alongside.
                    let listed = client
                        .list_subscriptions(app)
                        .await
                        .context("listing the app's webhook subscriptions")?;
                    let found = find_subscription(&listed, want).with_context(|| {
                        format!(
                            "creating the {item}: HubSpot answered that it exists, but does not list it"
                        )
                    })?;
                    ensure_active(client, app, found, &item).await?
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("creating the {item}")));
                }
            },
        };
        steps.push(Step { item, change });
    }
    Ok(steps)
}

/// The subscription of `subscriptions` that `want` describes (same event type
/// and property), active or not.
fn find_subscription<'a>(
    subscriptions: &'a [Subscription],
    want: &NewSubscription,
) -> Option<&'a Subscription> {
    subscriptions
        .iter()
        .find(|s| s.event_type == want.event_type && s.property_name == want.property_name)
}

/// Whether HubSpot refused a subscription create because that subscription
/// exists: a 409, whichever variant its message made of it.
fn already_exists(error: &HubSpotError) -> bool {
    matches!(
        error,
        HubSpotError::Permanent { status: 409, .. } | HubSpotError::Conflict { .. }
    )
}

/// Leaves an active subscription alone and switches an inactive one on.
async fn ensure_active(
    client: &Client,
    app: &DeveloperApp,
    subscription: &Subscription,
    item: &str,
) -> anyhow::Result<Change> {
    if subscription.active {
        return Ok(Change::Existed);
    }
    client
        .set_subscription_active(app, &subscription.id, true)
        .await
        .with_context(|| format!("activating the {item}"))?;
    Ok(Change::Updated("activated".to_owned()))
}

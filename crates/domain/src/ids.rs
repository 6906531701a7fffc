//! Numeric HubSpot identifiers as distinct types, so that a portal id can never
//! be passed where a contact id is expected.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw id.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw id.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    };
}

id_type!(
    /// A HubSpot account ("portal", "hub"): the tenant an event belongs to.
    PortalId
);
id_type!(
    /// A webhook subscription of our HubSpot app.
    SubscriptionId
);
id_type!(
    /// HubSpot's `eventId`; documented as *not* unique on its own.
    EventId
);
id_type!(
    /// The CRM object an event is about (for contacts: the contact id).
    ObjectId
);
id_type!(
    /// A HubSpot app.
    AppId
);
id_type!(
    /// A HubSpot contact (`hs_object_id`); an [`ObjectId`] once the event is
    /// known to be about a contact.
    ContactId
);

impl From<ObjectId> for ContactId {
    fn from(id: ObjectId) -> Self {
        Self(id.get())
    }
}

//! `POST /crm/v3/objects/contacts/search` with HubSpot's documented limits
//! (docs/hubspot-sim.md, "Search").

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::Value;

use super::contacts::{Contact, CrmStore};
use super::parse_time_ms;

/// At most this many results can be paged through.
pub(crate) const RESULT_CAP: usize = 10_000;
const MAX_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 6;
const MAX_FILTERS: usize = 18;
const MAX_LIMIT: usize = 200;
const MAX_QUERY_CHARS: usize = 3_000;
/// What a search returns when `properties` is empty (search docs).
pub(crate) const SEARCH_DEFAULTS: &[&str] = &[
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
];
/// Properties the free-text `query` looks in.
const QUERY_PROPERTIES: &[&str] = &[
    "email",
    "firstname",
    "lastname",
    "phone",
    "company",
    "website",
    "hs_additional_emails",
];

/// SPEC `PublicObjectSearchRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchRequest {
    #[serde(default)]
    pub(crate) filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    pub(crate) sorts: Vec<Sort>,
    #[serde(default)]
    pub(crate) properties: Vec<String>,
    pub(crate) limit: Option<usize>,
    pub(crate) after: Option<Value>,
    pub(crate) query: Option<String>,
}

/// Filters ANDed together; groups are ORed.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FilterGroup {
    #[serde(default)]
    pub(crate) filters: Vec<Filter>,
}

/// One condition on one property.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Filter {
    pub(crate) property_name: String,
    pub(crate) operator: String,
    pub(crate) value: Option<Value>,
    pub(crate) high_value: Option<Value>,
    pub(crate) values: Option<Vec<Value>>,
}

/// The docs send objects; the SPEC types sorts as strings (`"-createdate"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Sort {
    Object {
        #[serde(rename = "propertyName")]
        property_name: String,
        direction: Option<String>,
    },
    Text(String),
}

/// A validated search, ready to run.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) offset: usize,
    pub(crate) limit: usize,
}

/// The result: matching ids of the page, the total, the next offset.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) ids: Vec<u64>,
    pub(crate) total: usize,
    pub(crate) next: Option<usize>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl SearchRequest {
    /// Checks the documented limits; the message is HubSpot-like.
    pub(crate) fn plan(&self, store: &CrmStore) -> Result<Plan, String> {
        if self.filter_groups.len() > MAX_GROUPS {
            return Err(format!(
                "Too many filter groups: {} were sent, and at most {MAX_GROUPS} are allowed.",
                self.filter_groups.len()
            ));
        }
        let mut total = 0;
        for group in &self.filter_groups {
            if group.filters.len() > MAX_FILTERS_PER_GROUP {
                return Err(format!(
                    "Too many filters in a group: {} were sent, and at most {MAX_FILTERS_PER_GROUP} are allowed.",
                    group.filters.len()
                ));
            }
            total += group.filters.len();
            for f in &group.filters {
                if store.properties.get_any(&f.property_name).is_none() {
                    return Err(format!(
                        "There was a problem with the request: property {} does not exist.",
                        f.property_name
                    ));
                }
                check_operator(f)?;
            }
        }
        if total > MAX_FILTERS {
            return Err(format!(
                "Too many filters: {total} were sent, and at most {MAX_FILTERS} are allowed."
            ));
        }
        if self.sorts.len() > 1 {
            return Err("Only one sort is supported.".to_owned());
        }
        if self
            .query
            .as_ref()
            .is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS)
        {
            return Err(format!(
                "The query may be at most {MAX_QUERY_CHARS} characters long."
            ));
        }
        let limit = self.limit.unwrap_or(10);
        if limit > MAX_LIMIT {
            return Err(format!("limit may be at most {MAX_LIMIT}."));
        }
        let offset = match &self.after {
            None => 0,
            Some(v) => {
                let t = text(v);
                if t.is_empty() {
                    0
                } else {
                    t.parse::<usize>()
                        .map_err(|_| format!("Invalid after value: {t}"))?
                }
            }
        };
        if offset >= RESULT_CAP {
            return Err(format!(
                "Paging beyond {RESULT_CAP} results is not supported: after={offset}. Narrow the search with filters."
            ));
        }
        Ok(Plan { offset, limit })
    }

    /// Runs a planned search over contacts created at or before `visible_before`.
    pub(crate) fn run(&self, store: &CrmStore, plan: &Plan, visible_before: i64) -> Found {
        let query = self
            .query
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_lowercase);
        let mut matched: Vec<&Contact> = store
            .contacts
            .values()
            .filter(|c| !c.archived && c.created_at <= visible_before)
            .filter(|c| {
                self.filter_groups.is_empty()
                    || self
                        .filter_groups
                        .iter()
                        .any(|g| g.filters.iter().all(|f| matches(store, c, f)))
            })
            .filter(|c| {
                query.as_ref().is_none_or(|q| {
                    QUERY_PROPERTIES
                        .iter()
                        .filter_map(|p| c.non_empty(p))
                        .any(|v| v.to_lowercase().contains(q.as_str()))
                })
            })
            .collect();
        if let Some(sort) = self.sorts.first() {
            let (name, descending) = match sort {
                Sort::Object {
                    property_name,
                    direction,
                } => (
                    property_name.as_str(),
                    direction
                        .as_deref()
                        .is_some_and(|d| d.eq_ignore_ascii_case("DESCENDING")),
                ),
                Sort::Text(s) => match s.strip_prefix('-') {
                    Some(n) => (n, true),
                    None => (s.as_str(), false),
                },
            };
            let kind = store.properties.kind(name).to_owned();
            // Missing values sort last either way; ties keep creation order.
            matched.sort_by(|a, b| {
                let ord = match (a.non_empty(name), b.non_empty(name)) {
                    (Some(x), Some(y)) => {
                        let o = compare(&kind, x, y);
                        if descending { o.reverse() } else { o }
                    }
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                };
                ord.then(a.id.cmp(&b.id))
            });
        }
        let total = matched.len();
        let end = (plan.offset + plan.limit).min(total);
        let ids = matched
            .get(plan.offset..end)
            .unwrap_or_default()
            .iter()
            .map(|c| c.id)
            .collect();
        let next = (end < total).then_some(end);
        Found { ids, total, next }
    }
}

fn check_operator(f: &Filter) -> Result<(), String> {
    let needs_value = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(format!(
                "Operator {} on {} needs a value.",
                f.operator, f.property_name
            ))
        }
    };
    match f.operator.as_str() {
        "EQ" | "NEQ" | "LT" | "LTE" | "GT" | "GTE" | "CONTAINS_TOKEN" | "NOT_CONTAINS_TOKEN" => {
            needs_value(f.value.is_some())
        }
        "BETWEEN" => needs_value(f.value.is_some() && f.high_value.is_some()),
        "IN" | "NOT_IN" => needs_value(f.values.is_some()),
        "HAS_PROPERTY" | "NOT_HAS_PROPERTY" => Ok(()),
        other => Err(format!("Unknown filter operator {other}.")),
    }
}

/// Orders two stored values by the property's type.
fn compare(kind: &str, a: &str, b: &str) -> Ordering {
    match kind {
        "number" => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => a.cmp(b),
        },
        "datetime" | "date" => match (parse_time_ms(a), parse_time_ms(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => a.cmp(b),
        },
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

fn matches(store: &CrmStore, c: &Contact, f: &Filter) -> bool {
    let kind = store.properties.kind(&f.property_name);
    let actual = c.non_empty(&f.property_name);
    let value = f.value.as_ref().map(text).unwrap_or_default();
    // Filter values are case-insensitive except on enumerations (search docs).
    let eq = |x: &str, y: &str| match kind {
        "enumeration" => x == y,
        "number" | "datetime" | "date" => compare(kind, x, y) == Ordering::Equal,
        _ => x.eq_ignore_ascii_case(y),
    };
    match f.operator.as_str() {
        "HAS_PROPERTY" => actual.is_some(),
        "NOT_HAS_PROPERTY" => actual.is_none(),
        "EQ" => actual.is_some_and(|a| eq(a, &value)),
        "NEQ" => actual.is_none_or(|a| !eq(a, &value)),
        "LT" => actual.is_some_and(|a| compare(kind, a, &value) == Ordering::Less),
        "LTE" => actual.is_some_and(|a| compare(kind, a, &value) != Ordering::Greater),
        "GT" => actual.is_some_and(|a| compare(kind, a, &value) == Ordering::Greater),
        "GTE" => actual.is_some_and(|a| compare(kind, a, &value) != Ordering::Less),
        "BETWEEN" => {
            let high = f.high_value.as_ref().map(text).unwrap_or_default();
            actual.is_some_and(|a| {
                compare(kind, a, &value) != Ordering::Less
                    && compare(kind, a, &high) != Ordering::Greater
            })
        }
        // IN on strings wants lower-case values (search docs): compare the
        // lower-cased stored value with the values exactly as sent.
        "IN" | "NOT_IN" => {
            let values: Vec<String> = f.values.iter().flatten().map(text).collect();
            let hit = actual.is_some_and(|a| {
                let a = if kind == "string" {
                    a.to_lowercase()
                } else {
                    a.to_owned()
                };
                values
                    .iter()
                    .any(|v| if kind == "string" { *v == a } else { eq(&a, v) })
            });
            if f.operator == "IN" { hit } else { !hit }
        }
        "CONTAINS_TOKEN" | "NOT_CONTAINS_TOKEN" => {
            let needle = value.trim_matches('*').to_lowercase();
            let hit = actual.is_some_and(|a| a.to_lowercase().contains(&needle));
            if f.operator == "CONTAINS_TOKEN" {
                hit
            } else {
                !hit
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::Source;

    fn store_with(n: u64) -> CrmStore {
        let mut store = CrmStore::new(false);
        let src = Source::integration(1);
        let mut changes = Vec::new();
        for i in 0..n {
            let w = vec![
                ("email".to_owned(), format!("user{i}@example.com")),
                ("firstname".to_owned(), format!("N{}", n - i)),
            ];
            store
                .create(i + 1, &w, &src, 1_000 + i as i64, &mut changes)
                .expect("create");
        }
        store
    }

    fn req(json: &str) -> SearchRequest {
        serde_json::from_str(json).expect("request")
    }

    #[test]
    fn email_filter_is_case_insensitive_and_sorting_works() {
        let store = store_with(5);
        let r = req(
            r#"{"filterGroups":[{"filters":[{"propertyName":"email","operator":"EQ","value":"USER3@example.com"}]}]}"#,
        );
        let plan = r.plan(&store).expect("plan");
        assert_eq!(r.run(&store, &plan, i64::MAX).ids, vec![4]);
        let r =
            req(r#"{"sorts":[{"propertyName":"createdate","direction":"DESCENDING"}],"limit":2}"#);
        let plan = r.plan(&store).expect("plan");
        let found = r.run(&store, &plan, i64::MAX);
        assert_eq!(
            (found.ids, found.total, found.next),
            (vec![5, 4], 5, Some(2))
        );
    }

    #[test]
    fn createdate_range_and_the_result_cap() {
        let store = store_with(5);
        let r = req(
            r#"{"filterGroups":[{"filters":[{"propertyName":"createdate","operator":"GTE","value":"1003"}]}]}"#,
        );
        let plan = r.plan(&store).expect("plan");
        assert_eq!(r.run(&store, &plan, i64::MAX).ids, vec![4, 5]);
        assert!(req(r#"{"after":"10000"}"#).plan(&store).is_err());
        assert!(req(r#"{"after":"9999"}"#).plan(&store).is_ok());
        assert!(req(r#"{"limit":201}"#).plan(&store).is_err());
    }
}

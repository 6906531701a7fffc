//! docs/configuration.md is the operators' list of settings: every key the
//! compiled defaults define has a row in its section, with the same default,
//! and the page lists no key that does not exist.

use std::collections::BTreeMap;

use figment::Figment;
use figment::providers::{Format as _, Toml};
use figment::value::Value;
use leadsync_runtime::config::DEFAULTS;

const PAGE: &str = include_str!("../../../docs/configuration.md");

type Sections = BTreeMap<String, BTreeMap<String, Value>>;

/// The `| \`key\` | \`default\` | meaning |` rows of each `## \`[section]\``.
fn documented() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in PAGE.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            current = heading
                .strip_prefix("`[")
                .and_then(|h| h.split_once("]`"))
                .map(|(name, _)| name.to_owned());
            continue;
        }
        let Some(section) = &current else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // ["", "`key`", "`default`", "meaning", ""]
        let (Some(key), Some(default)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let (Some(key), Some(default)) = (code(key), code(default)) else {
            continue;
        };
        sections
            .entry(section.clone())
            .or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), default.to_owned());
    }
    sections
}

fn code(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`')
}

/// A default as the page writes it: TOML (`8080`, `[]`, `""`), or a bare
/// string (`0.0.0.0`).
fn parse_default(text: &str) -> Value {
    Figment::from(Toml::string(&format!("v = {text}")))
        .extract_inner::<Value>("v")
        .unwrap_or_else(|_| Value::from(text.to_owned()))
}

#[test]
fn every_key_is_documented_with_its_default_and_no_other() {
    let defaults: Sections = Figment::from(Toml::string(DEFAULTS))
        .extract()
        .expect("the compiled defaults parse");
    let page = documented();
    assert!(
        page.len() >= 5,
        "the page's tables were not found: {page:?}"
    );

    let mut problems = Vec::new();
    for (section, keys) in &defaults {
        let rows = page.get(section);
        for (key, value) in keys {
            match rows.and_then(|r| r.get(key)) {
                None => problems.push(format!("`{section}.{key}` is not documented")),
                Some(text) if parse_default(text) != *value => problems.push(format!(
                    "`{section}.{key}`: the page says `{text}`, the default is {value:?}"
                )),
                Some(_) => {}
            }
        }
    }
    for (section, rows) in &page {
        for key in rows.keys() {
            if !defaults.get(section).is_some_and(|k| k.contains_key(key)) {
                problems.push(format!(
                    "`{section}.{key}` is documented but does not exist"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "docs/configuration.md: {problems:#?}");
}

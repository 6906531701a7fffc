//! CRM v3 contacts (docs/hubspot-sim.md, "Contacts").

use std::collections::{BTreeMap, HashSet};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Ctx, Reply, finish, gate, parse_json};
use crate::auth::lock;
use crate::crm::contacts::{ContactJson, Writes};
use crate::crm::search::{SEARCH_DEFAULTS, SearchRequest};
use crate::crm::{CrmStore, Selection, WriteError, iso, now_ms};
use crate::error::{ApiError, property_errors};
use crate::query::{Query, decode_path_segment};
use crate::state::Sim;
use crate::stats::Endpoint;

const MAX_BATCH: usize = 100;
const MAX_LIST_LIMIT: u64 = 100;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/crm/v3/objects/{objectType}")
            .route("", web::get().to(list))
            .route("", web::post().to(create))
            .route("/batch/read", web::post().to(batch_read))
            .route("/batch/create", web::post().to(batch_create))
            .route("/batch/update", web::post().to(batch_update))
            .route("/batch/upsert", web::post().to(batch_upsert))
            .route("/batch/archive", web::post().to(batch_archive))
            .route("/search", web::post().to(search))
            .route("/merge", web::post().to(merge))
            .route("/gdpr-delete", web::post().to(gdpr_delete))
            .route("/{contactId}", web::get().to(get))
            .route("/{contactId}", web::patch().to(update))
            .route("/{contactId}", web::delete().to(archive)),
    );
}

/// Runs `f` behind the gate and renders its result.
fn handle(
    sim: &Sim,
    req: &HttpRequest,
    endpoint: Endpoint,
    f: impl FnOnce(&Sim, &Ctx) -> Result<Reply, ApiError>,
) -> HttpResponse {
    let ctx = match gate(sim, req, endpoint) {
        Ok(ctx) => ctx,
        Err(resp) => return *resp,
    };
    let result = check_object_type(req).and_then(|()| f(sim, &ctx));
    finish(sim, &ctx, result)
}

/// Only contacts are simulated; other types get HubSpot's unknown-type error.
fn check_object_type(req: &HttpRequest) -> Result<(), ApiError> {
    match req.match_info().get("objectType") {
        Some("contacts" | "0-1") => Ok(()),
        other => Err(ApiError::validation(format!(
            "Unable to infer object type from: {}",
            other.unwrap_or_default()
        ))),
    }
}

/// An id sent as a JSON string or number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdValue {
    Text(String),
    Number(u64),
}

impl IdValue {
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
        }
    }
}

/// A list sent as an array or a comma-joined string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringList {
    List(Vec<String>),
    Joined(String),
}

impl StringList {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::List(v) => v,
            Self::Joined(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct PropertiesBody {
    #[serde(default)]
    properties: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchReadBody {
    #[serde(default)]
    inputs: Vec<IdInput>,
    properties: Option<StringList>,
    properties_with_history: Option<StringList>,
    id_property: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IdInput {
    id: IdValue,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateInput {
    #[serde(default)]
    properties: Map<String, Value>,
    object_write_trace_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateInput {
    id: IdValue,
    id_property: Option<String>,
    #[serde(default)]
    properties: Map<String, Value>,
    object_write_trace_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Inputs<T> {
    #[serde(default = "Vec::new")]
    inputs: Vec<T>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MergeBody {
    primary_object_id: IdValue,
    object_id_to_merge: IdValue,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GdprBody {
    object_id: IdValue,
    id_property: Option<String>,
}

/// `BatchResponseSimplePublicObject` (and `…WithErrors` for 207).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchJson<'a> {
    status: &'static str,
    results: Vec<ContactJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_errors: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<Value>,
    started_at: String,
    completed_at: String,
}

impl<'a> BatchJson<'a> {
    fn new(results: Vec<ContactJson<'a>>, errors: Vec<Value>, started: i64) -> Self {
        Self {
            status: "COMPLETE",
            results,
            num_errors: (!errors.is_empty()).then_some(errors.len()),
            errors,
            started_at: iso(started),
            completed_at: iso(now_ms()),
        }
    }

    fn status(&self, ok: StatusCode) -> StatusCode {
        if self.errors.is_empty() {
            ok
        } else {
            StatusCode::MULTI_STATUS
        }
    }
}

/// Property values arrive as JSON; HubSpot stores strings. Numbers and
/// booleans are stringified; null and structures are refused.
fn coerce(props: Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    props
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            Value::Bool(b) => Ok((k, b.to_string())),
            Value::Null => Err(ApiError::validation(format!(
                "Invalid input JSON: property {k} is null; send \"\" to clear a value."
            ))),
            _ => Err(ApiError::validation(format!(
                "Invalid input JSON: property {k} must be a string."
            ))),
        })
        .collect()
}

fn write_error(portal_id: u64, err: WriteError, raw_id: &str) -> ApiError {
    match err {
        WriteError::Invalid(errors) => property_errors(portal_id, &errors),
        WriteError::Conflict(id) => ApiError::contact_exists(id),
        WriteError::NotFound => ApiError::object_not_found(raw_id),
        WriteError::Rejected(message) => ApiError::validation(message),
    }
}

/// A failed input of a batch, as a 207 `errors[]` item.
fn batch_error(err: &ApiError, trace_id: Option<&str>) -> Value {
    let mut item = json!({
        "status": "error",
        "category": err.body.get("category").cloned().unwrap_or(Value::Null),
        "message": err.body.get("message").cloned().unwrap_or(Value::Null),
    });
    if let Some(trace) = trace_id {
        item["context"] = json!({ "objectWriteTraceId": [trace] });
    }
    item
}

fn check_batch_size(n: usize) -> Result<(), ApiError> {
    if n > MAX_BATCH {
        Err(ApiError::batch_too_large(n))
    } else {
        Ok(())
    }
}

fn check_id_property(store: &CrmStore, id_property: Option<&str>) -> Result<(), ApiError> {
    match id_property {
        None | Some("hs_object_id") => Ok(()),
        Some(p) if store.properties.is_unique(p) => Ok(()),
        Some(p) => Err(ApiError::validation(format!(
            "Invalid idProperty {p}: it is not a unique-value property of contacts."
        ))),
    }
}

/// The raw last path segment plus query, as HubSpot echoes it in `context.id`.
fn raw_id(req: &HttpRequest) -> String {
    let segment = req.path().rsplit('/').next().unwrap_or_default();
    match req.query_string() {
        "" => segment.to_owned(),
        q => format!("{segment}?{q}"),
    }
}

fn selection(q: &Query) -> Selection {
    Selection {
        properties: q.has("properties").then(|| q.list("properties")),
        with_history: q.list("propertiesWithHistory"),
    }
}

async fn list(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsList, |_, ctx| {
        let q = Query::parse(req.query_string());
        let limit = q.u64("limit")?.unwrap_or(10);
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(ApiError::validation(format!(
                "limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}."
            )));
        }
        let after = match q.get("after").filter(|a| !a.is_empty()) {
            None => 0,
            Some(a) => a
                .parse::<u64>()
                .map_err(|_| ApiError::validation(format!("Invalid paging cursor after={a}.")))?,
        };
        let archived = q.bool("archived", false)?;
        let sel = selection(&q);
        let store = lock(&ctx.portal.crm);
        let (page, next) = store.page(after, limit as usize, archived);
        let results: Vec<ContactJson<'_>> = page.into_iter().map(|c| store.view(c, &sel)).collect();
        let mut body = json!({ "results": results });
        if let Some(next) = next {
            body["paging"] =
                json!({ "next": { "after": next.to_string(), "link": format!("?after={next}") } });
        }
        Reply::json(StatusCode::OK, &body)
    })
}

async fn get(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsGet, |_, ctx| {
        let q = Query::parse(req.query_string());
        let raw = decode_path_segment(req.match_info().get("contactId").unwrap_or_default());
        let archived = q.bool("archived", false)?;
        let id_property = q.get("idProperty");
        let sel = selection(&q);
        let store = lock(&ctx.portal.crm);
        check_id_property(&store, id_property)?;
        let id = store
            .resolve(&raw, id_property, archived)
            .ok_or_else(|| ApiError::object_not_found(&raw_id(&req)))?;
        let contact = store
            .get(id)
            .ok_or_else(|| ApiError::object_not_found(&raw_id(&req)))?;
        Reply::json(StatusCode::OK, &store.view(contact, &sel))
    })
}

async fn create(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsCreate, |sim, ctx| {
        let input: PropertiesBody = parse_json(&body)?;
        let props = coerce(input.properties)?;
        let mut changes = Vec::new();
        let reply = {
            let mut store = lock(&ctx.portal.crm);
            let writes = store
                .validate(&props)
                .map_err(|e| property_errors(ctx.portal.id, &e))?;
            let id = sim.ids.next_contact_id();
            store
                .create(id, &writes, &ctx.source(), now_ms(), &mut changes)
                .map_err(|e| write_error(ctx.portal.id, e, ""))?;
            let contact = store
                .get(id)
                .ok_or_else(|| ApiError::object_not_found(&id.to_string()))?;
            Reply::json(StatusCode::CREATED, &store.view_all(contact))?
        };
        sim.emit(ctx.portal.id, &changes);
        Ok(reply)
    })
}

async fn update(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsUpdate, |sim, ctx| {
        let q = Query::parse(req.query_string());
        let raw = decode_path_segment(req.match_info().get("contactId").unwrap_or_default());
        let input: PropertiesBody = parse_json(&body)?;
        let props = coerce(input.properties)?;
        let mut changes = Vec::new();
        let reply = {
            let mut store = lock(&ctx.portal.crm);
            check_id_property(&store, q.get("idProperty"))?;
            let id = store
                .resolve(&raw, q.get("idProperty"), false)
                .ok_or_else(|| ApiError::object_not_found(&raw_id(&req)))?;
            let writes = store
                .validate(&props)
                .map_err(|e| property_errors(ctx.portal.id, &e))?;
            store
                .update(id, &writes, &ctx.source(), now_ms(), &mut changes)
                .map_err(|e| write_error(ctx.portal.id, e, &raw_id(&req)))?;
            let contact = store
                .get(id)
                .ok_or_else(|| ApiError::object_not_found(&raw_id(&req)))?;
            Reply::json(StatusCode::OK, &store.view_all(contact))?
        };
        sim.emit(ctx.portal.id, &changes);
        Ok(reply)
    })
}

async fn archive(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsArchive, |sim, ctx| {
        let raw = decode_path_segment(req.match_info().get("contactId").unwrap_or_default());
        let mut changes = Vec::new();
        {
            let mut store = lock(&ctx.portal.crm);
            match store.resolve(&raw, None, false) {
                Some(id) => store
                    .archive(id, &ctx.source(), now_ms(), &mut changes)
                    .map_err(|e| write_error(ctx.portal.id, e, &raw))?,
                // Deleting what is already in the recycle bin succeeds again.
                None if store.resolve(&raw, None, true).is_some() => {}
                None => return Err(ApiError::object_not_found(&raw_id(&req))),
            }
        }
        sim.emit(ctx.portal.id, &changes);
        Ok(Reply::empty())
    })
}

async fn batch_read(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsBatchRead, |_, ctx| {
        let started = now_ms();
        let q = Query::parse(req.query_string());
        let archived = q.bool("archived", false)?;
        let input: BatchReadBody = parse_json(&body)?;
        check_batch_size(input.inputs.len())?;
        let sel = Selection {
            properties: input.properties.map(StringList::into_vec),
            with_history: input
                .properties_with_history
                .map(StringList::into_vec)
                .unwrap_or_default(),
        };
        let store = lock(&ctx.portal.crm);
        check_id_property(&store, input.id_property.as_deref())?;
        let mut seen = HashSet::new();
        let mut results = Vec::new();
        let mut missing = Vec::new();
        for i in &input.inputs {
            let raw = i.id.text();
            match store.resolve(&raw, input.id_property.as_deref(), archived) {
                Some(id) => {
                    if seen.insert(id)
                        && let Some(c) = store.get(id)
                    {
                        results.push(store.view(c, &sel));
                    }
                }
                None => missing.push(raw),
            }
        }
        let errors = if missing.is_empty() {
            Vec::new()
        } else {
            vec![json!({
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.",
                "context": { "ids": missing },
            })]
        };
        let body = BatchJson::new(results, errors, started);
        Reply::json(body.status(StatusCode::OK), &body)
    })
}

/// Whether a batch reports errors per input (207) rather than failing whole:
/// HubSpot does so when every input carries an `objectWriteTraceId`.
fn partial<'a>(mut traces: impl Iterator<Item = Option<&'a String>>) -> bool {
    traces.all(|t| t.is_some())
}

async fn batch_create(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsBatchCreate, |sim, ctx| {
        let started = now_ms();
        let input: Inputs<CreateInput> = parse_json(&body)?;
        check_batch_size(input.inputs.len())?;
        let partial = !input.inputs.is_empty()
            && partial(
                input
                    .inputs
                    .iter()
                    .map(|i| i.object_write_trace_id.as_ref()),
            );
        let mut changes = Vec::new();
        let reply = {
            let mut store = lock(&ctx.portal.crm);
            // Validate everything first: without trace ids the batch is all or nothing.
            let mut planned: Vec<Result<Writes, ApiError>> = Vec::with_capacity(input.inputs.len());
            let mut emails = HashSet::new();
            for i in &input.inputs {
                let result = coerce(i.properties.clone()).and_then(|props| {
                    let writes = store
                        .validate(&props)
                        .map_err(|e| property_errors(ctx.portal.id, &e))?;
                    if let Some((_, email)) =
                        writes.iter().find(|(n, v)| n == "email" && !v.is_empty())
                    {
                        if let Some(existing) = store.id_by_email(email) {
                            return Err(ApiError::contact_exists(existing));
                        }
                        if !emails.insert(email.clone()) {
                            return Err(ApiError::validation(format!(
                                "Duplicate email in batch input: {email}"
                            )));
                        }
                    }
                    Ok(writes)
                });
                planned.push(result);
            }
            if !partial && let Some(Err(first)) = planned.iter().find(|p| p.is_err()) {
                return Err(first.clone());
            }
            let source = ctx.source();
            let now = now_ms();
            let mut ids = Vec::new();
            let mut errors = Vec::new();
            for (i, plan) in input.inputs.iter().zip(planned) {
                let trace = i.object_write_trace_id.as_deref();
                match plan.and_then(|w| {
                    store
                        .create(sim.ids.next_contact_id(), &w, &source, now, &mut changes)
                        .map_err(|e| write_error(ctx.portal.id, e, ""))
                }) {
                    Ok(id) => ids.push(id),
                    Err(e) => errors.push(batch_error(&e, trace)),
                }
            }
            let results = ids
                .iter()
                .filter_map(|id| store.get(*id))
                .map(|c| store.view_all(c))
                .collect();
            let body = BatchJson::new(results, errors, started);
            Reply::json(body.status(StatusCode::CREATED), &body)?
        };
        sim.emit(ctx.portal.id, &changes);
        Ok(reply)
    })
}

/// Rejects the same id twice in one batch, as HubSpot does.
fn check_unique_ids(inputs: &[UpdateInput]) -> Result<(), ApiError> {
    let mut seen = HashSet::new();
    let dups: Vec<String> = inputs
        .iter()
        .map(|i| i.id.text())
        .filter(|id| !seen.insert(id.to_lowercase()))
        .collect();
    if dups.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "Duplicate IDs found in batch input: [{}]. IDs must be unique",
            dups.join(", ")
        )))
    }
}

async fn batch_update(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsBatchUpdate, |sim, ctx| {
        let started = now_ms();
        let input: Inputs<UpdateInput> = parse_json(&body)?;
        check_batch_size(input.inputs.len())?;
        check_unique_ids(&input.inputs)?;
        let partial = !input.inputs.is_empty()
            && partial(
                input
                    .inputs
                    .iter()
                    .map(|i| i.object_write_trace_id.as_ref()),
            );
        let mut changes = Vec::new();
        let reply = {
            let mut store = lock(&ctx.portal.crm);
            let mut planned: Vec<Result<(u64, Writes), ApiError>> = Vec::new();
            for i in &input.inputs {
                let raw = i.id.text();
                let result = check_id_property(&store, i.id_property.as_deref())
                    .and_then(|()| {
                        store
                            .resolve(&raw, i.id_property.as_deref(), false)
                            .ok_or_else(|| ApiError::object_not_found(&raw))
                    })
                    .and_then(|id| {
                        let props = coerce(i.properties.clone())?;
                        let writes = store
                            .validate(&props)
                            .map_err(|e| property_errors(ctx.portal.id, &e))?;
                        Ok((id, writes))
                    });
                planned.push(result);
            }
            if !partial && let Some(Err(first)) = planned.iter().find(|p| p.is_err()) {
                return Err(first.clone());
            }
            let source = ctx.source();
            let now = now_ms();
            let mut ids = Vec::new();
            let mut errors = Vec::new();
            let mut failure = None;
            for (i, plan) in input.inputs.iter().zip(planned) {
                let trace = i.object_write_trace_id.as_deref();
                let outcome = plan.and_then(|(id, w)| {
                    store
                        .update(id, &w, &source, now, &mut changes)
                        .map(|_| id)
                        .map_err(|e| write_error(ctx.portal.id, e, &i.id.text()))
                });
                match outcome {
                    Ok(id) => ids.push(id),
                    // Without trace ids, a conflict found while applying still
                    // fails the request; earlier inputs stay applied.
                    Err(e) if !partial => {
                        failure = Some(e);
                        break;
                    }
                    Err(e) => errors.push(batch_error(&e, trace)),
                }
            }
            match failure {
                Some(e) => Err(e),
                None => {
                    let results = ids
                        .iter()
                        .filter_map(|id| store.get(*id))
                        .map(|c| store.view_all(c))
                        .collect();
                    let body = BatchJson::new(results, errors, started);
                    Reply::json(body.status(StatusCode::OK), &body)
                }
            }
        };
        // Emit even when a late input failed: what was applied did happen.
        sim.emit(ctx.portal.id, &changes);
        reply
    })
}

async fn batch_upsert(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsBatchUpsert, |sim, ctx| {
        let started = now_ms();
        let input: Inputs<UpdateInput> = parse_json(&body)?;
        check_batch_size(input.inputs.len())?;
        check_unique_ids(&input.inputs)?;
        let mut changes = Vec::new();
        let reply = {
            let mut store = lock(&ctx.portal.crm);
            // Validate all inputs before writing any.
            let mut planned = Vec::with_capacity(input.inputs.len());
            for i in &input.inputs {
                let id_property = i
                    .id_property
                    .as_deref()
                    .ok_or_else(|| ApiError::validation("idProperty is required for upsert."))?;
                if id_property == "hs_object_id" || !store.properties.is_unique(id_property) {
                    return Err(ApiError::validation(format!(
                        "Invalid idProperty {id_property}: upsert needs a unique-value property such as email."
                    )));
                }
                let mut props = coerce(i.properties.clone())?;
                props.insert(id_property.to_owned(), i.id.text());
                let writes = store
                    .validate(&props)
                    .map_err(|e| property_errors(ctx.portal.id, &e))?;
                let existing = store.resolve(&i.id.text(), Some(id_property), false);
                planned.push((existing, writes));
            }
            let source = ctx.source();
            let now = now_ms();
            let mut done = Vec::with_capacity(planned.len());
            let mut failure = None;
            for (existing, writes) in planned {
                let outcome = match existing {
                    Some(id) => store
                        .update(id, &writes, &source, now, &mut changes)
                        .map(|_| (id, false))
                        .map_err(|e| write_error(ctx.portal.id, e, &id.to_string())),
                    None => store
                        .create(
                            sim.ids.next_contact_id(),
                            &writes,
                            &source,
                            now,
                            &mut changes,
                        )
                        .map(|id| (id, true))
                        .map_err(|e| write_error(ctx.portal.id, e, "")),
                };
                match outcome {
                    Ok(d) => done.push(d),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failure {
                drop(store);
                sim.emit(ctx.portal.id, &changes);
                return Err(e);
            }
            let results = done
                .iter()
                .filter_map(|(id, new)| {
                    store.get(*id).map(|c| {
                        let mut view = store.view_all(c);
                        view.new = Some(*new);
                        view
                    })
                })
                .collect();
            let body = BatchJson::new(results, Vec::new(), started);
            Reply::json(StatusCode::OK, &body)
        };
        sim.emit(ctx.portal.id, &changes);
        reply
    })
}

async fn batch_archive(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsBatchArchive, |sim, ctx| {
        let input: Inputs<IdInput> = parse_json(&body)?;
        check_batch_size(input.inputs.len())?;
        let mut changes = Vec::new();
        {
            let mut store = lock(&ctx.portal.crm);
            let source = ctx.source();
            let now = now_ms();
            for i in &input.inputs {
                // Unknown ids are skipped: batch archive answers 204 regardless.
                if let Some(id) = store.resolve(&i.id.text(), None, false) {
                    store
                        .archive(id, &source, now, &mut changes)
                        .map_err(|e| write_error(ctx.portal.id, e, &id.to_string()))?;
                }
            }
        }
        sim.emit(ctx.portal.id, &changes);
        Ok(Reply::empty())
    })
}

async fn search(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsSearch, |sim, ctx| {
        let request: SearchRequest = parse_json(&body)?;
        let lag = i64::try_from(sim.config.search_index_lag.as_millis()).unwrap_or(i64::MAX);
        let store = lock(&ctx.portal.crm);
        let plan = request.plan(&store).map_err(ApiError::validation)?;
        let found = request.run(&store, &plan, now_ms().saturating_sub(lag));
        let sel = Selection {
            properties: Some(if request.properties.is_empty() {
                SEARCH_DEFAULTS.iter().map(|s| (*s).to_owned()).collect()
            } else {
                request.properties
            }),
            with_history: Vec::new(),
        };
        let results: Vec<ContactJson<'_>> = found
            .ids
            .iter()
            .filter_map(|id| store.get(*id))
            .map(|c| store.view(c, &sel))
            .collect();
        let mut body = json!({ "total": found.total, "results": results });
        if let Some(next) = found.next {
            body["paging"] = json!({ "next": { "after": next.to_string() } });
        }
        Reply::json(StatusCode::OK, &body)
    })
}

async fn merge(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsMerge, |sim, ctx| {
        let input: MergeBody = parse_json(&body)?;
        let (primary_raw, other_raw) = (
            input.primary_object_id.text(),
            input.object_id_to_merge.text(),
        );
        let mut changes = Vec::new();
        let reply = {
            let mut store = lock(&ctx.portal.crm);
            let primary = store
                .resolve(&primary_raw, None, false)
                .ok_or_else(|| ApiError::object_not_found(&primary_raw))?;
            let other = store
                .resolve(&other_raw, None, false)
                .ok_or_else(|| ApiError::object_not_found(&other_raw))?;
            store
                .merge(primary, other, &ctx.source(), now_ms(), &mut changes)
                .map_err(|e| write_error(ctx.portal.id, e, &other_raw))?;
            let contact = store
                .get(primary)
                .ok_or_else(|| ApiError::object_not_found(&primary_raw))?;
            Reply::json(StatusCode::OK, &store.view_all(contact))?
        };
        sim.emit(ctx.portal.id, &changes);
        Ok(reply)
    })
}

async fn gdpr_delete(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::ContactsGdprDelete, |sim, ctx| {
        let input: GdprBody = parse_json(&body)?;
        let raw = input.object_id.text();
        let mut changes = Vec::new();
        {
            let mut store = lock(&ctx.portal.crm);
            check_id_property(&store, input.id_property.as_deref())?;
            match store.resolve(&raw, input.id_property.as_deref(), false) {
                Some(id) => store
                    .gdpr_delete(id, &ctx.source(), now_ms(), &mut changes)
                    .map_err(|e| write_error(ctx.portal.id, e, &raw))?,
                // "If email address is not found, the email address will be
                // added to a blocklist": still a success.
                None if input.id_property.as_deref() == Some("email") => {}
                None => return Err(ApiError::object_not_found(&raw)),
            }
        }
        sim.emit(ctx.portal.id, &changes);
        Ok(Reply::empty())
    })
}

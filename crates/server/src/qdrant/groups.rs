//! Search results grouped by a payload value (`points/query/groups`,
//! `points/search/groups`): the best `limit` groups, each with its best
//! `group_size` hits.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value};
use vectorizer_engine::payload::{Node, PayloadView, Scalar};
use vectorizer_service::Call;

use super::query::{QueryRequest, SearchRequest};
use super::search::{Common, Nearest, nearest, refuse_given, resolve};
use super::shapes::Scored;
use super::{bad, reply};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, CallOf, Path};

/// Most values of one hit's `group_by` field looked at (a long list puts
/// a point in its first this-many groups).
const VALUES_PER_HIT: usize = 64;

#[derive(Serialize)]
struct Group {
    id: Value,
    hits: Vec<Scored>,
}

#[derive(Serialize)]
struct Groups {
    groups: Vec<Group>,
}

impl crate::answer::Weight for Groups {
    fn weight(&self) -> usize {
        self.groups
            .iter()
            .map(|g| crate::answer::Weight::weight(&g.hits))
            .sum()
    }
}

/// The values a hit is grouped by: the strings and integers at the dotted
/// `key` (each element of a list), at most [`VALUES_PER_HIT`]. The walk is
/// the filters' own (`PayloadView::leaves`), so a key reaches into lists
/// here as it does in a filter.
fn group_values(payload: Option<&Map<String, Value>>, key: &str) -> Vec<Value> {
    let Some(payload) = payload else {
        return Vec::new();
    };
    let path: Vec<String> = key
        .split('.')
        .map(|p| p.trim_end_matches("[]").to_owned())
        .collect();
    let mut out = Vec::new();
    let mut take = |n: Node<'_>| {
        let v = match n.scalar() {
            Some(Scalar::Str(s)) => Value::from(s),
            Some(Scalar::Int(i)) => Value::from(i),
            Some(Scalar::UInt(u)) => Value::from(u),
            _ => return,
        };
        if out.len() < VALUES_PER_HIT {
            out.push(v);
        }
    };
    payload.leaves(&path, &mut |leaf| {
        if !leaf.each_item(&mut take) {
            take(leaf);
        }
    });
    out
}

/// Searches wider (up to the service's largest `limit`) until the groups
/// are full or the collection has no more hits.
async fn grouped(
    state: &AppState,
    call: &Call,
    name: &str,
    q: Nearest,
    mut c: Common,
    group_by: &str,
    group_size: usize,
) -> Result<Groups, ApiError> {
    let max = state.service.options().limits.max_limit;
    let groups = c.limit;
    if group_size == 0 || groups == 0 || groups.saturating_mul(group_size) > max {
        return Err(bad(format!(
            "`limit` and `group_size` must be at least 1, and `limit` × `group_size` at most {max}"
        )));
    }
    c.with_payload.check()?;
    if c.offset > 0 {
        return Err(bad("`offset` is not taken by group searches"));
    }
    let sel = std::mem::take(&mut c.with_payload);
    let mut fetch = groups.saturating_mul(group_size).saturating_mul(4).min(max);
    loop {
        c.limit = fetch;
        let query = Nearest {
            vector: q.vector.clone(),
            exclude: q.exclude.clone(),
        };
        let hits = nearest(state, call, name, query, &c, true).await?;
        let exhausted = hits.len() < fetch || fetch == max;
        let mut order: Vec<Group> = Vec::new();
        let mut at: HashMap<Value, usize> = HashMap::new();
        let mut full = 0;
        for h in hits {
            for v in group_values(h.payload.as_ref(), group_by) {
                let i = match at.get(&v) {
                    Some(i) => *i,
                    None if order.len() < groups => {
                        at.insert(v.clone(), order.len());
                        order.push(Group {
                            id: v,
                            hits: Vec::new(),
                        });
                        order.len() - 1
                    }
                    None => continue,
                };
                let g = &mut order[i];
                if g.hits.len() < group_size {
                    g.hits.push(Scored {
                        id: h.id,
                        version: 0,
                        score: h.score,
                        payload: sel.apply(h.payload.clone(), false),
                        vector: h.vector.clone(),
                        json_bytes: h.json_bytes,
                    });
                    full += (g.hits.len() == group_size) as usize;
                }
            }
        }
        if exhausted || full == groups {
            return Ok(Groups { groups: order });
        }
        fetch = fetch.saturating_mul(4).min(max);
    }
}

pub async fn query_groups(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(mut req): ApiJson<QueryRequest>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    req.refusals()?;
    refuse_given("with_lookup", &req.with_lookup)?;
    let Some(group_by) = req.group_by.take() else {
        return Err(bad("`group_by` is required"));
    };
    let group_size = req.group_size.unwrap_or(3);
    let c = req.common();
    let Some(query) = req.query.take() else {
        return Err(bad("`query` is required"));
    };
    let q = resolve(&state, &call, &name, query).await?;
    let out = grouped(&state, &call, &name, q, c, &group_by, group_size).await?;
    reply(&call, t, out).await
}

pub async fn search_groups(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let (q, c, group_by, group_size) = req.split()?;
    let Some(group_by) = group_by else {
        return Err(bad("`group_by` is required"));
    };
    let out = grouped(
        &state,
        &call,
        &name,
        q,
        c,
        &group_by,
        group_size.unwrap_or(1),
    )
    .await?;
    reply(&call, t, out).await
}

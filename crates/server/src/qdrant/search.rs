//! Search in the dialect: `points/query` (nearest to a vector or to a
//! point, or recommended from examples), its batch and group forms, and
//! the older `search`, `search/batch`, `search/groups`, `recommend` and
//! `recommend/batch`. Each resolves to one nearest-neighbour search of the
//! service; points used as examples are left out of the answer, as Qdrant
//! does.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use axum::extract::State;
use axum::response::Response;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vectorizer_engine::config::MAX_EF;
use vectorizer_engine::filter::Condition;
use vectorizer_engine::{Filter, PointId};
use vectorizer_service::Call;
use vectorizer_service::model::{GetPoints, Search};

use super::shapes::{Scored, VectorIn, WithPayload, WithVector};
use super::{bad, reply};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, CallOf, Path};

/// `params`: search-time settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default)]
    hnsw_ef: Option<usize>,
    #[serde(default)]
    exact: Option<bool>,
    #[serde(default, rename = "quantization")]
    _quantization: Option<IgnoredAny>,
    #[serde(default, rename = "indexed_only")]
    _indexed_only: Option<IgnoredAny>,
    #[serde(default, rename = "acorn")]
    _acorn: Option<IgnoredAny>,
}

/// An example in `recommend`: a point id or a vector.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Example {
    Id(PointId),
    Vector(Vec<f32>),
}

/// A resolved search: one vector, and the points to leave out.
struct Nearest {
    vector: Vec<f32>,
    exclude: Vec<PointId>,
}

/// What every search form shares once its query is resolved.
struct Common {
    filter: Option<Filter>,
    params: Params,
    limit: usize,
    offset: usize,
    score_threshold: Option<f32>,
    with_payload: WithPayload,
    with_vector: WithVector,
}

/// The vectors of points named as examples, in the order named.
async fn vectors_of(
    state: &AppState,
    call: &Call,
    name: &str,
    ids: Vec<PointId>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let got = state
        .service
        .get_points(
            call,
            name,
            GetPoints {
                ids: ids.clone(),
                with_payload: false,
                with_vector: true,
            },
        )
        .await?;
    let found: BTreeMap<PointId, Vec<f32>> = got
        .points
        .into_iter()
        .filter_map(|r| Some((r.id, r.vector?)))
        .collect();
    ids.iter()
        .map(|id| {
            found.get(id).cloned().ok_or_else(|| {
                ApiError::from(vectorizer_service::ServiceError::PointNotFound(
                    id.to_string(),
                ))
            })
        })
        .collect()
}

fn mean(vs: &[Vec<f32>]) -> Vec<f32> {
    let mut out = vec![0.0f32; vs[0].len()];
    for v in vs {
        if v.len() != out.len() {
            continue;
        }
        out.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    }
    let n = vs.len() as f32;
    out.iter_mut().for_each(|a| *a /= n);
    out
}

/// Qdrant's `average_vector` strategy: the mean of the positives, moved
/// away from the mean of the negatives (`2·mean(pos) − mean(neg)`).
async fn recommended(
    state: &AppState,
    call: &Call,
    name: &str,
    positive: Vec<Example>,
    negative: Vec<Example>,
    strategy: Option<&str>,
) -> Result<Nearest, ApiError> {
    if strategy.is_some_and(|s| s != "average_vector") {
        return Err(bad(
            "recommend: only the `average_vector` strategy is supported",
        ));
    }
    if positive.is_empty() {
        return Err(bad("recommend needs at least one positive example"));
    }
    let mut exclude = Vec::new();
    let mut side = async |examples: Vec<Example>| -> Result<Vec<Vec<f32>>, ApiError> {
        let mut ids = Vec::new();
        let mut out = Vec::new();
        for e in examples {
            match e {
                Example::Id(id) => ids.push(id),
                Example::Vector(v) => out.push(v),
            }
        }
        exclude.extend(ids.iter().copied());
        out.extend(vectors_of(state, call, name, ids).await?);
        Ok(out)
    };
    let pos = side(positive).await?;
    let neg = side(negative).await?;
    let p = mean(&pos);
    let vector = if neg.is_empty() {
        p
    } else {
        let n = mean(&neg);
        p.iter().zip(&n).map(|(a, b)| a + (a - b)).collect()
    };
    Ok(Nearest { vector, exclude })
}

/// Runs one resolved search: `limit` hits after `offset`, examples left out.
async fn nearest(
    state: &AppState,
    call: &Call,
    name: &str,
    q: Nearest,
    c: &Common,
    payload_for_groups: bool,
) -> Result<Vec<Scored>, ApiError> {
    let mut filter = c.filter.clone();
    if !q.exclude.is_empty() {
        let mut f = Filter::default();
        if let Some(user) = filter.take() {
            f.must.push(Condition::Nested(Box::new(user)));
        }
        f.must_not.push(Condition::HasId(
            q.exclude.iter().copied().collect::<HashSet<_>>(),
        ));
        filter = Some(f);
    }
    let want = c.limit.saturating_add(c.offset);
    // `exact` asks for the widest beam the engine has: on collections up
    // to that many points, every point is scored.
    let ef = if c.params.exact == Some(true) {
        Some(MAX_EF.max(want).min(MAX_EF))
    } else {
        c.params.hnsw_ef
    };
    let hits = state
        .service
        .search(
            call,
            name,
            Search {
                vector: q.vector,
                limit: want,
                filter,
                ef,
                score_threshold: c.score_threshold,
                with_payload: payload_for_groups || c.with_payload.wanted(false),
                with_vector: c.with_vector.wanted(),
            },
        )
        .await?;
    Ok(hits
        .results
        .into_iter()
        .skip(c.offset)
        .map(|h| {
            if payload_for_groups {
                // Whole payloads, to group by; selected once grouped.
                Scored::from(h, &WithPayload::Flag(true))
            } else {
                Scored::from(h, &c.with_payload)
            }
        })
        .collect())
}

fn refuse_using(using: &Option<String>) -> Result<(), ApiError> {
    match using.as_deref() {
        None | Some("") => Ok(()),
        Some(_) => Err(bad(
            "named vectors are not supported: leave `using` out (or \"\")",
        )),
    }
}

fn refuse_given(field: &str, v: &Option<Value>) -> Result<(), ApiError> {
    if v.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(bad(format!("`{field}` is not supported")));
    }
    Ok(())
}

// ---- points/query ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    #[serde(default)]
    query: Option<Value>,
    #[serde(default)]
    using: Option<String>,
    #[serde(default)]
    prefetch: Option<Value>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    params: Option<Params>,
    #[serde(default)]
    score_threshold: Option<f32>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: WithVector,
    #[serde(default)]
    lookup_from: Option<Value>,
    #[serde(default, rename = "shard_key")]
    _shard_key: Option<IgnoredAny>,
    // For the groups form.
    #[serde(default)]
    group_by: Option<String>,
    #[serde(default)]
    group_size: Option<usize>,
    #[serde(default)]
    with_lookup: Option<Value>,
}

impl QueryRequest {
    fn common(&mut self) -> Common {
        Common {
            filter: self.filter.take(),
            params: self.params.take().unwrap_or_default(),
            limit: self.limit.unwrap_or(10),
            offset: self.offset.unwrap_or(0),
            score_threshold: self.score_threshold,
            with_payload: std::mem::take(&mut self.with_payload),
            with_vector: std::mem::take(&mut self.with_vector),
        }
    }
}

/// Resolves a `query`: a vector, a point id, `{"nearest": ...}` or
/// `{"recommend": {...}}`. Other kinds are refused by name.
async fn resolve(
    state: &AppState,
    call: &Call,
    name: &str,
    query: Value,
) -> Result<Nearest, ApiError> {
    let as_example = |v: Value| -> Result<Example, ApiError> {
        serde_json::from_value(v).map_err(|_| bad("`query`: a vector or a point id"))
    };
    match query {
        Value::Object(mut m) if m.len() == 1 => {
            let (kind, v) = m
                .iter_mut()
                .next()
                .map(|(k, v)| (k.clone(), v.take()))
                .expect("one");
            match kind.as_str() {
                "nearest" => Box::pin(resolve(state, call, name, v)).await,
                "recommend" => {
                    #[derive(Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Rec {
                        #[serde(default)]
                        positive: Vec<Example>,
                        #[serde(default)]
                        negative: Vec<Example>,
                        #[serde(default)]
                        strategy: Option<String>,
                    }
                    let r: Rec = serde_json::from_value(v)
                        .map_err(|e| bad(format!("`query.recommend`: {e}")))?;
                    recommended(
                        state,
                        call,
                        name,
                        r.positive,
                        r.negative,
                        r.strategy.as_deref(),
                    )
                    .await
                }
                other => Err(bad(format!(
                    "`query.{}` is not supported: a vector, a point id, `nearest` or `recommend` are",
                    crate::error::cut(other.to_owned(), 40)
                ))),
            }
        }
        Value::Object(_) => Err(bad("`query`: one kind of query per request")),
        v => match as_example(v)? {
            Example::Vector(vector) => Ok(Nearest {
                vector,
                exclude: Vec::new(),
            }),
            Example::Id(id) => {
                let mut vs = vectors_of(state, call, name, vec![id]).await?;
                Ok(Nearest {
                    vector: vs.remove(0),
                    exclude: vec![id],
                })
            }
        },
    }
}

async fn run_query(
    state: &AppState,
    call: &Call,
    name: &str,
    mut req: QueryRequest,
) -> Result<Vec<Scored>, ApiError> {
    refuse_using(&req.using)?;
    refuse_given("prefetch", &req.prefetch)?;
    refuse_given("lookup_from", &req.lookup_from)?;
    let c = req.common();
    let Some(query) = req.query.take().filter(|q| !q.is_null()) else {
        return Err(bad(
            "`query` is required: a vector, a point id, `nearest` or `recommend`",
        ));
    };
    let q = resolve(state, call, name, query).await?;
    nearest(state, call, name, q, &c, false).await
}

#[derive(Serialize)]
struct QueryResponse {
    points: Vec<Scored>,
}

impl crate::answer::Weight for QueryResponse {
    fn weight(&self) -> usize {
        crate::answer::Weight::weight(&self.points)
    }
}

impl crate::answer::Weight for Vec<QueryResponse> {
    fn weight(&self) -> usize {
        self.iter().map(crate::answer::Weight::weight).sum()
    }
}

pub async fn query(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<QueryRequest>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let points = run_query(&state, &call, &name, req).await?;
    reply(&call, t, QueryResponse { points }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch<T> {
    searches: Vec<T>,
    #[serde(default, rename = "timeout")]
    _timeout: Option<IgnoredAny>,
}

fn check_batch<T>(state: &AppState, b: &Batch<T>) -> Result<(), ApiError> {
    let max = state.service.options().max_batch_searches;
    if b.searches.len() > max {
        return Err(bad(format!("a batch holds at most {max} searches")));
    }
    Ok(())
}

pub async fn query_batch(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Batch<QueryRequest>>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    check_batch(&state, &req)?;
    let mut out = Vec::with_capacity(req.searches.len());
    for q in req.searches {
        out.push(QueryResponse {
            points: run_query(&state, &call, &name, q).await?,
        });
    }
    reply(&call, t, out).await
}

// ---- groups ----

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

/// The values a hit is grouped by: the strings and integers at `key`
/// (each element of a list).
fn group_values(payload: Option<&serde_json::Map<String, Value>>, key: &str) -> Vec<Value> {
    let mut at: Vec<&Value> = Vec::new();
    let parts: Vec<&str> = key.split('.').map(|p| p.trim_end_matches("[]")).collect();
    if let Some(v) = payload.and_then(|p| p.get(parts[0])) {
        at.push(v);
    }
    for part in &parts[1..] {
        at = at
            .into_iter()
            .flat_map(|v| match v {
                Value::Array(xs) => xs.iter().filter_map(|x| x.get(part)).collect::<Vec<_>>(),
                other => other.get(part).into_iter().collect(),
            })
            .collect();
    }
    let mut out = Vec::new();
    for v in at {
        match v {
            Value::Array(xs) => out.extend(xs.iter().filter(|x| groupable(x)).cloned()),
            v if groupable(v) => out.push(v.clone()),
            _ => {}
        }
    }
    out
}

fn groupable(v: &Value) -> bool {
    v.is_string() || v.as_i64().is_some() || v.as_u64().is_some()
}

/// Groups of hits by a payload value: the best `limit` groups, each with
/// its best `group_size` hits. Found by searching wider (up to the
/// service's largest `limit`) until the groups are full or the collection
/// has no more hits.
async fn grouped(
    state: &AppState,
    call: &Call,
    name: &str,
    q: Nearest,
    mut c: Common,
    group_by: &str,
    group_size: usize,
) -> Result<Groups, ApiError> {
    if group_size == 0 || c.limit == 0 {
        return Err(bad("`limit` and `group_size` must be at least 1"));
    }
    let max = state.service.options().limits.max_limit;
    let groups = c.limit;
    c.offset = 0;
    let mut fetch = groups.saturating_mul(group_size).saturating_mul(4).min(max);
    let sel = std::mem::take(&mut c.with_payload);
    loop {
        c.limit = fetch;
        let query = Nearest {
            vector: q.vector.clone(),
            exclude: q.exclude.clone(),
        };
        let hits = nearest(state, call, name, query, &c, true).await?;
        let exhausted = hits.len() < fetch || fetch == max;
        let mut order: Vec<Group> = Vec::new();
        let mut full = 0;
        for h in hits {
            let values = group_values(h.payload.as_ref(), group_by);
            for v in values {
                let at = order.iter().position(|g| g.id == v);
                let g = match at {
                    Some(i) => &mut order[i],
                    None if order.len() < groups => {
                        order.push(Group {
                            id: v,
                            hits: Vec::new(),
                        });
                        order.last_mut().expect("pushed")
                    }
                    None => continue,
                };
                if g.hits.len() < group_size {
                    g.hits.push(Scored {
                        payload: sel.apply(h.payload.clone(), false),
                        vector: h.vector.clone(),
                        ..Scored {
                            id: h.id,
                            version: 0,
                            score: h.score,
                            payload: None,
                            vector: None,
                            json_bytes: h.json_bytes,
                        }
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
    refuse_using(&req.using)?;
    refuse_given("prefetch", &req.prefetch)?;
    refuse_given("lookup_from", &req.lookup_from)?;
    refuse_given("with_lookup", &req.with_lookup)?;
    let Some(group_by) = req.group_by.take() else {
        return Err(bad("`group_by` is required"));
    };
    let group_size = req.group_size.unwrap_or(3);
    let c = req.common();
    let Some(query) = req.query.take().filter(|q| !q.is_null()) else {
        return Err(bad("`query` is required"));
    };
    let q = resolve(&state, &call, &name, query).await?;
    let out = grouped(&state, &call, &name, q, c, &group_by, group_size).await?;
    reply(&call, t, out).await
}

// ---- the older search and recommend routes ----

/// `vector`: a list, or `{"name": "", "vector": [...]}`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum SearchVector {
    Plain(VectorIn),
    Named { name: String, vector: Vec<f32> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    vector: SearchVector,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    params: Option<Params>,
    limit: usize,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: WithVector,
    #[serde(default)]
    score_threshold: Option<f32>,
    #[serde(default, rename = "shard_key")]
    _shard_key: Option<IgnoredAny>,
    #[serde(default)]
    group_by: Option<String>,
    #[serde(default)]
    group_size: Option<usize>,
    #[serde(default)]
    with_lookup: Option<Value>,
}

impl SearchRequest {
    fn split(self) -> Result<(Nearest, Common, Option<String>, Option<usize>), ApiError> {
        let vector = match self.vector {
            SearchVector::Plain(v) => v.0,
            SearchVector::Named { name, vector } if name.is_empty() => vector,
            SearchVector::Named { .. } => {
                return Err(bad(
                    "named vectors are not supported: send the vector as a list",
                ));
            }
        };
        refuse_given("with_lookup", &self.with_lookup)?;
        let c = Common {
            filter: self.filter,
            params: self.params.unwrap_or_default(),
            limit: self.limit,
            offset: self.offset.unwrap_or(0),
            score_threshold: self.score_threshold,
            with_payload: self.with_payload,
            with_vector: self.with_vector,
        };
        let q = Nearest {
            vector,
            exclude: Vec::new(),
        };
        Ok((q, c, self.group_by, self.group_size))
    }
}

pub async fn search(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let (q, c, _, _) = req.split()?;
    let hits = nearest(&state, &call, &name, q, &c, false).await?;
    reply(&call, t, hits).await
}

pub async fn search_batch(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Batch<SearchRequest>>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    check_batch(&state, &req)?;
    let mut out = Vec::with_capacity(req.searches.len());
    for s in req.searches {
        let (q, c, _, _) = s.split()?;
        out.push(nearest(&state, &call, &name, q, &c, false).await?);
    }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    #[serde(default)]
    positive: Vec<Example>,
    #[serde(default)]
    negative: Vec<Example>,
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    params: Option<Params>,
    limit: usize,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: WithVector,
    #[serde(default)]
    score_threshold: Option<f32>,
    #[serde(default)]
    using: Option<String>,
    #[serde(default)]
    lookup_from: Option<Value>,
    #[serde(default, rename = "shard_key")]
    _shard_key: Option<IgnoredAny>,
}

async fn run_recommend(
    state: &AppState,
    call: &Call,
    name: &str,
    r: RecommendRequest,
) -> Result<Vec<Scored>, ApiError> {
    refuse_using(&r.using)?;
    refuse_given("lookup_from", &r.lookup_from)?;
    let q = recommended(
        state,
        call,
        name,
        r.positive,
        r.negative,
        r.strategy.as_deref(),
    )
    .await?;
    let c = Common {
        filter: r.filter,
        params: r.params.unwrap_or_default(),
        limit: r.limit,
        offset: r.offset.unwrap_or(0),
        score_threshold: r.score_threshold,
        with_payload: r.with_payload,
        with_vector: r.with_vector,
    };
    nearest(state, call, name, q, &c, false).await
}

pub async fn recommend(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<RecommendRequest>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let hits = run_recommend(&state, &call, &name, req).await?;
    reply(&call, t, hits).await
}

pub async fn recommend_batch(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Batch<RecommendRequest>>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    check_batch(&state, &req)?;
    let mut out = Vec::with_capacity(req.searches.len());
    for r in req.searches {
        out.push(run_recommend(&state, &call, &name, r).await?);
    }
    reply(&call, t, out).await
}

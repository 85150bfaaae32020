//! Search in the dialect: `points/query` (nearest to a vector or to a
//! point, or recommended from examples) and its batch form, and the older
//! `search`, `search/batch`, `recommend` and `recommend/batch`. Each
//! resolves to one nearest-neighbour search of the service; points used as
//! examples are left out of the answer, as Qdrant does.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use vectorizer_engine::filter::Condition;
use vectorizer_engine::{Filter, PointId};
use vectorizer_service::Call;
use vectorizer_service::model::{GetPoints, Search};

use super::query::{
    Batch, Params, QueryIn, QueryRequest, Recommend, RecommendRequest, SearchRequest,
};
use super::shapes::{Example, Given, Scored, WithPayload, WithVector};
use super::{bad, reply};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, CallOf, Path};

/// Most examples (positive and negative together) one recommendation
/// takes: each is a vector read and averaged.
pub const MAX_EXAMPLES: usize = 256;

/// A resolved search: one vector, and the points to leave out.
pub(super) struct Nearest {
    pub vector: Vec<f32>,
    pub exclude: Vec<PointId>,
}

/// What every search form shares once its query is resolved.
pub(super) struct Common {
    pub filter: Option<Filter>,
    pub params: Params,
    pub limit: usize,
    pub offset: usize,
    pub score_threshold: Option<f32>,
    pub with_payload: WithPayload,
    pub with_vector: WithVector,
}

/// The vectors of the points named, by id (each id read once).
async fn vectors_of(
    state: &AppState,
    call: &Call,
    name: &str,
    ids: Vec<PointId>,
) -> Result<BTreeMap<PointId, Vec<f32>>, ApiError> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
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
    if let Some(missing) = ids.iter().find(|id| !found.contains_key(id)) {
        return Err(vectorizer_service::ServiceError::PointNotFound(missing.to_string()).into());
    }
    Ok(found)
}

/// Qdrant's `average_vector` strategy: the mean of the positives, moved
/// away from the mean of the negatives (`2·mean(pos) − mean(neg)`).
async fn recommended(
    state: &AppState,
    call: &Call,
    name: &str,
    r: Recommend,
) -> Result<Nearest, ApiError> {
    if r.strategy.as_deref().is_some_and(|s| s != "average_vector") {
        return Err(bad(
            "recommend: only the `average_vector` strategy is supported",
        ));
    }
    if r.positive.is_empty() {
        return Err(bad("recommend needs at least one positive example"));
    }
    if r.positive.len() + r.negative.len() > MAX_EXAMPLES {
        return Err(bad(format!(
            "recommend takes at most {MAX_EXAMPLES} examples"
        )));
    }
    let ids: Vec<PointId> = r
        .positive
        .iter()
        .chain(&r.negative)
        .filter_map(|e| match e {
            Example::Id(id) => Some(*id),
            Example::Vector(_) => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let stored = vectors_of(state, call, name, ids.clone()).await?;
    // Up to MAX_EXAMPLES vectors of the collection's dimension: summed on
    // one of the caller's workers, not on the runtime.
    let vector = call
        .run_blocking(move || average(&r.positive, &r.negative, &stored))
        .await??;
    Ok(Nearest {
        vector,
        exclude: ids,
    })
}

fn average(
    positive: &[Example],
    negative: &[Example],
    stored: &BTreeMap<PointId, Vec<f32>>,
) -> Result<Vec<f32>, ApiError> {
    let dim = match &positive[0] {
        Example::Id(id) => stored[id].len(),
        Example::Vector(v) => v.len(),
    };
    let mean = |xs: &[Example]| -> Result<Option<Vec<f32>>, ApiError> {
        if xs.is_empty() {
            return Ok(None);
        }
        let mut sum = vec![0.0f32; dim];
        for e in xs {
            let v = match e {
                Example::Id(id) => &stored[id],
                Example::Vector(v) => v,
            };
            if v.len() != dim {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "dimension_mismatch",
                    "recommend: every example must have the collection's dimension",
                ));
            }
            sum.iter_mut().zip(v).for_each(|(a, b)| *a += b);
        }
        let n = xs.len() as f32;
        sum.iter_mut().for_each(|a| *a /= n);
        Ok(Some(sum))
    };
    let p = mean(positive)?.expect("at least one positive");
    Ok(match mean(negative)? {
        None => p,
        Some(n) => p.iter().zip(&n).map(|(a, b)| a + (a - b)).collect(),
    })
}

/// Resolves a `query` to one vector and the points to leave out.
pub(super) async fn resolve(
    state: &AppState,
    call: &Call,
    name: &str,
    query: QueryIn,
) -> Result<Nearest, ApiError> {
    match query {
        QueryIn::Nearest(Example::Vector(vector)) => Ok(Nearest {
            vector,
            exclude: Vec::new(),
        }),
        QueryIn::Nearest(Example::Id(id)) => {
            let mut found = vectors_of(state, call, name, vec![id]).await?;
            Ok(Nearest {
                vector: found.remove(&id).expect("found"),
                exclude: vec![id],
            })
        }
        QueryIn::Recommend(r) => recommended(state, call, name, r).await,
    }
}

/// The user's filter with the examples left out, held to the filter
/// budget as a whole (so it travels the cluster wire as it is checked).
fn with_exclusions(
    filter: Option<Filter>,
    exclude: &[PointId],
) -> Result<Option<Filter>, ApiError> {
    if exclude.is_empty() {
        return Ok(filter);
    }
    let mut f = filter.unwrap_or_default();
    f.must_not
        .push(Condition::HasId(exclude.iter().copied().collect()));
    let text = serde_json::to_string(&f).map_err(|_| ApiError::internal())?;
    Filter::from_json_text(&text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            format!("with the examples left out, {e}"),
        )
    })?;
    Ok(Some(f))
}

/// Runs one resolved search: `limit` hits after `offset`, examples left
/// out. With `whole_payloads`, hits keep their whole payloads (to group
/// by) whatever `with_payload` says.
pub(super) async fn nearest(
    state: &AppState,
    call: &Call,
    name: &str,
    q: Nearest,
    c: &Common,
    whole_payloads: bool,
) -> Result<Vec<Scored>, ApiError> {
    c.with_payload.check()?;
    let want = c.limit.saturating_add(c.offset);
    let hits = state
        .service
        .search(
            call,
            name,
            Search {
                vector: q.vector,
                limit: want,
                filter: with_exclusions(c.filter.clone(), &q.exclude)?,
                ef: c.params.hnsw_ef,
                score_threshold: c.score_threshold,
                with_payload: whole_payloads || c.with_payload.wanted(false),
                with_vector: c.with_vector.wanted(),
                exact: c.params.exact == Some(true),
            },
        )
        .await?;
    let sel = if whole_payloads {
        &WithPayload::Flag(true)
    } else {
        &c.with_payload
    };
    Ok(hits
        .results
        .into_iter()
        .skip(c.offset)
        .map(|h| Scored::from(h, sel))
        .collect())
}

fn refuse_grouping(group_by: &Option<String>, group_size: &Option<usize>) -> Result<(), ApiError> {
    if group_by.is_some() || group_size.is_some() {
        return Err(bad(
            "`group_by` and `group_size` belong to `points/search/groups`",
        ));
    }
    Ok(())
}

pub(super) fn refuse_using(using: &Option<String>) -> Result<(), ApiError> {
    match using.as_deref() {
        None | Some("") => Ok(()),
        Some(_) => Err(bad(
            "named vectors are not supported: leave `using` out (or \"\")",
        )),
    }
}

pub(super) fn refuse_given(field: &str, v: &Given) -> Result<(), ApiError> {
    if v.0 {
        return Err(bad(format!("`{field}` is not supported")));
    }
    Ok(())
}

/// What a batch's answers may weigh together: the service's answer limit,
/// as for a native batch.
pub(super) struct AnswerBudget(usize);

impl AnswerBudget {
    pub fn new(state: &AppState) -> AnswerBudget {
        AnswerBudget(state.service.options().limits.max_answer_bytes)
    }

    pub fn take(&mut self, hits: &[Scored]) -> Result<(), ApiError> {
        let bytes: usize = hits.iter().map(|h| h.json_bytes).sum();
        self.0 = self.0.checked_sub(bytes).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "answer_too_large",
                "the batch's answers together are larger than the answer limit: ask for fewer points, or leave payloads or vectors out",
            )
        })?;
        Ok(())
    }
}

pub(super) fn check_batch<T>(state: &AppState, b: &Batch<T>) -> Result<(), ApiError> {
    let max = state.service.options().max_batch_searches;
    if b.searches.len() > max {
        return Err(bad(format!("a batch holds at most {max} searches")));
    }
    Ok(())
}

// ---- points/query ----

impl QueryRequest {
    pub(super) fn common(&mut self) -> Common {
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

    /// Refuses what the plain and group forms both leave out.
    pub(super) fn refusals(&self) -> Result<(), ApiError> {
        refuse_using(&self.using)?;
        self.with_vector.check()?;
        refuse_given("prefetch", &self.prefetch)?;
        refuse_given("lookup_from", &self.lookup_from)
    }
}

async fn run_query(
    state: &AppState,
    call: &Call,
    name: &str,
    mut req: QueryRequest,
) -> Result<Vec<Scored>, ApiError> {
    req.refusals()?;
    if req.group_by.is_some() || req.group_size.is_some() || req.with_lookup.0 {
        return Err(bad(
            "`group_by`, `group_size` and `with_lookup` belong to `points/query/groups`",
        ));
    }
    let c = req.common();
    let Some(query) = req.query.take() else {
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

pub async fn query_batch(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Batch<QueryRequest>>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    check_batch(&state, &req)?;
    let mut budget = AnswerBudget::new(&state);
    let mut out = Vec::with_capacity(req.searches.len());
    for q in req.searches {
        let points = run_query(&state, &call, &name, q).await?;
        budget.take(&points)?;
        out.push(QueryResponse { points });
    }
    reply(&call, t, out).await
}

// ---- the older search and recommend routes ----

impl SearchRequest {
    pub(super) fn split(
        self,
    ) -> Result<(Nearest, Common, Option<String>, Option<usize>), ApiError> {
        refuse_given("with_lookup", &self.with_lookup)?;
        self.with_vector.check()?;
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
            vector: self.vector.0,
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
    let (q, c, group_by, group_size) = req.split()?;
    refuse_grouping(&group_by, &group_size)?;
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
    let mut budget = AnswerBudget::new(&state);
    let mut out = Vec::with_capacity(req.searches.len());
    for s in req.searches {
        let (q, c, group_by, group_size) = s.split()?;
        refuse_grouping(&group_by, &group_size)?;
        let hits = nearest(&state, &call, &name, q, &c, false).await?;
        budget.take(&hits)?;
        out.push(hits);
    }
    reply(&call, t, out).await
}

async fn run_recommend(
    state: &AppState,
    call: &Call,
    name: &str,
    r: RecommendRequest,
) -> Result<Vec<Scored>, ApiError> {
    refuse_using(&r.using)?;
    r.with_vector.check()?;
    refuse_given("lookup_from", &r.lookup_from)?;
    let examples = Recommend {
        positive: r.positive,
        negative: r.negative,
        strategy: r.strategy,
    };
    let q = recommended(state, call, name, examples).await?;
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
    let mut budget = AnswerBudget::new(&state);
    let mut out = Vec::with_capacity(req.searches.len());
    for r in req.searches {
        let hits = run_recommend(&state, &call, &name, r).await?;
        budget.take(&hits)?;
        out.push(hits);
    }
    reply(&call, t, out).await
}

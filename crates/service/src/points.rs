//! Point operations: upsert (quota-checked under the collection's writer
//! lock), get, delete, scroll, count, search and batch search.

use std::sync::Arc;

use vectorizer_engine::{
    Deadline, Filter, PayloadChange, Point, PointId, Record, SearchRequest, Selection, With,
};

use crate::caller::{Caller, Permission};

/// Reading at most this many points by id is short work.
const LIGHT_GET: usize = 100;
use crate::cluster::Op;
use crate::error::{Result, ServiceError};
use crate::model::*;
use crate::quota::Amount;
use crate::service::{Call, Service};

/// The points a request names: `ids` or `filter`, exactly one.
fn selection(ids: Option<Vec<PointId>>, filter: Option<Filter>) -> Result<Selection> {
    match (ids, filter) {
        (Some(ids), None) => Ok(Selection::Ids(ids)),
        (None, Some(f)) => Ok(Selection::Filter(f)),
        _ => Err(ServiceError::unprocessable(
            "invalid_request",
            "name the points by exactly one of `ids` and `filter`",
        )),
    }
}

fn record(r: Record) -> PointRecord {
    PointRecord {
        id: r.id,
        vector: r.vector,
        payload: r.payload,
        json_bytes: r.json_bytes,
    }
}

fn search_request(req: Search) -> Result<SearchRequest> {
    Ok(SearchRequest {
        filter: req.filter,
        vector: req.vector,
        limit: req.limit,
        ef: req.ef,
        score_threshold: req.score_threshold,
        with_payload: req.with_payload,
        with_vector: req.with_vector,
        deadline: Default::default(),
        exact: req.exact,
    })
}

fn results(hits: Vec<vectorizer_engine::ScoredPoint>) -> SearchResults {
    SearchResults {
        results: hits
            .into_iter()
            .map(|h| Hit {
                id: h.id,
                score: h.score,
                payload: h.payload,
                vector: h.vector,
                json_bytes: h.json_bytes,
            })
            .collect(),
    }
}

impl Service {
    /// Upserts. With the Hub enabled, a tenant's batch is checked against
    /// its plan under the collection's writer lock: which ids are new, and
    /// what the batch costs on disk, are decided where no other write or
    /// delete can change them, and the amount stays reserved until the
    /// write is applied.
    pub async fn upsert(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        req: UpsertPoints,
    ) -> Result<Upserted> {
        let (caller, ticket) = call.enter(Permission::Write)?;
        crate::service::routed!(
            self,
            caller,
            Op::Upsert {
                name: name.into(),
                req
            },
            upserted
        );
        let c = self.open_collection(ticket, caller, name).await?;
        let plan = match (caller, self.quotas.get().cloned()) {
            (Caller::Tenant(t), Some(q)) => Some((t.user_id, q.limits(&t.user_id).await?, q)),
            _ => None,
        };
        let points: Vec<Point> = req
            .points
            .into_iter()
            .map(|p| Point {
                id: p.id,
                vector: p.vector,
                payload: p.payload,
            })
            .collect();
        let svc = self.clone();
        let coll = c.clone();
        let upserted = ticket
            .run(move |_| {
                let (n, _reservation) = coll.upsert_admitted(points, |cost| match &plan {
                    None => Ok(None),
                    Some((user, limits, quotas)) => {
                        let want = Amount {
                            collections: 0,
                            vectors: cost.new_points,
                            bytes: cost.bytes,
                        };
                        quotas
                            .reserve(*user, *limits, want, || svc.usage_of(user))
                            .map(Some)
                    }
                })?;
                Ok(n)
            })
            .await?;
        self.report(&c);
        Ok(Upserted { upserted })
    }

    pub async fn get_point(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        id: &str,
    ) -> Result<PointRecord> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::routed!(
            self,
            caller,
            Op::GetPoint {
                name: name.into(),
                id: id.into()
            },
            point
        );
        let c = self.open_collection(ticket, caller, name).await?;
        let pid = PointId::parse_str(id)?;
        let with = With {
            payload: true,
            vector: true,
        };
        ticket
            .run_short(move |_| {
                c.get(&[pid], with)?
                    .into_iter()
                    .next()
                    .map(record)
                    .ok_or_else(|| ServiceError::PointNotFound(pid.to_string()))
            })
            .await
    }

    /// Points by id, each once however often it is asked for.
    pub async fn get_points(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        req: GetPoints,
    ) -> Result<Points> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::routed!(
            self,
            caller,
            Op::GetPoints {
                name: name.into(),
                req
            },
            points
        );
        let c = self.open_collection(ticket, caller, name).await?;
        let with = With {
            payload: req.with_payload,
            vector: req.with_vector,
        };
        // A few points by id are short work; thousands with their vectors
        // are not.
        let light = req.ids.len() <= LIGHT_GET;
        let work = move |_: &Deadline| {
            Ok(Points {
                points: c.get(&req.ids, with)?.into_iter().map(record).collect(),
            })
        };
        if light {
            ticket.run_short(work).await
        } else {
            ticket.run(work).await
        }
    }

    pub async fn delete_points(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        req: DeletePoints,
    ) -> Result<Deleted> {
        let (caller, ticket) = call.enter(Permission::Delete)?;
        crate::service::routed!(
            self,
            caller,
            Op::DeletePoints {
                name: name.into(),
                req
            },
            deleted
        );
        let c = self.open_collection(ticket, caller, name).await?;
        let sel = selection(req.ids, req.filter)?;
        if matches!(&sel, Selection::Filter(f) if f.is_empty()) {
            return Err(ServiceError::unprocessable(
                "invalid_request",
                "an empty filter matches every point: to delete them all, delete the collection",
            ));
        }
        let coll = c.clone();
        let deleted = ticket
            .run(move |deadline| Ok(coll.delete_selected(&sel, deadline)?))
            .await?;
        self.report(&c);
        Ok(Deleted { deleted })
    }

    /// Sets payload keys (`overwrite`: replaces whole payloads) of the
    /// points selected. What the change adds on disk is checked against
    /// the storage quota under the collection's writer lock, like a write.
    pub async fn set_payload(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        req: SetPayload,
        overwrite: bool,
    ) -> Result<Updated> {
        let (caller, _) = call.enter(Permission::Write)?;
        crate::service::routed!(
            self,
            caller,
            Op::SetPayload {
                name: name.into(),
                req,
                overwrite
            },
            updated
        );
        let change = if overwrite {
            PayloadChange::Overwrite(req.payload)
        } else {
            PayloadChange::Set(req.payload)
        };
        self.change_payload(call, name, req.ids, req.filter, change)
            .await
    }

    /// Removes payload keys of the points selected.
    pub async fn delete_payload(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        req: DeletePayload,
    ) -> Result<Updated> {
        let (caller, _) = call.enter(Permission::Write)?;
        crate::service::routed!(
            self,
            caller,
            Op::DeletePayload {
                name: name.into(),
                req
            },
            updated
        );
        if req.keys.is_empty() {
            return Err(ServiceError::unprocessable(
                "invalid_request",
                "`keys` names at least one payload key",
            ));
        }
        let change = PayloadChange::DeleteKeys(req.keys);
        self.change_payload(call, name, req.ids, req.filter, change)
            .await
    }

    async fn change_payload(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        ids: Option<Vec<PointId>>,
        filter: Option<Filter>,
        change: PayloadChange,
    ) -> Result<Updated> {
        let (caller, ticket) = call.enter(Permission::Write)?;
        let c = self.open_collection(ticket, caller, name).await?;
        let sel = selection(ids, filter)?;
        let plan = match (caller, self.quotas.get().cloned()) {
            (Caller::Tenant(t), Some(q)) => Some((t.user_id, q.limits(&t.user_id).await?, q)),
            _ => None,
        };
        let (svc, coll) = (self.clone(), c.clone());
        let updated = ticket
            .run(move |deadline| {
                let (n, _reservation) =
                    coll.update_payloads(&sel, &change, deadline, |cost| match &plan {
                        Some((user, limits, quotas)) if cost.bytes > 0 => {
                            let want = Amount {
                                bytes: cost.bytes,
                                ..Amount::default()
                            };
                            quotas
                                .reserve(*user, *limits, want, || svc.usage_of(user))
                                .map(Some)
                        }
                        _ => Ok(None),
                    })?;
                Ok(n)
            })
            .await?;
        self.report(&c);
        Ok(Updated { updated })
    }

    pub async fn scroll(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        req: Scroll,
    ) -> Result<ScrollPage> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::routed!(
            self,
            caller,
            Op::Scroll {
                name: name.into(),
                req
            },
            page
        );
        let c = self.open_collection(ticket, caller, name).await?;
        let filter = req.filter;
        let with = With {
            payload: req.with_payload,
            vector: req.with_vector,
        };
        ticket
            .run(move |deadline| {
                let (points, next_cursor) =
                    c.scroll(req.limit, req.cursor, filter.as_ref(), with, deadline)?;
                Ok(ScrollPage {
                    points: points.into_iter().map(record).collect(),
                    next_cursor,
                })
            })
            .await
    }

    pub async fn count(self: &Arc<Self>, call: &Call, name: &str, req: Count) -> Result<Counted> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::routed!(
            self,
            caller,
            Op::Count {
                name: name.into(),
                req
            },
            counted
        );
        let c = self.open_collection(ticket, caller, name).await?;
        let filter = req.filter;
        ticket
            .run(move |deadline| {
                Ok(Counted {
                    count: c.count(filter.as_ref(), deadline)?,
                })
            })
            .await
    }

    /// Nearest neighbours. A quick graph walk (bounded in comparisons, see
    /// `Collection::try_search_quick`) runs in place when the collection's
    /// lock is free this instant: handing it to a thread costs two thread
    /// switches, a large share of its time. It counts against the
    /// caller's requests in flight like any request, and shares the async
    /// workers with everyone's; anything longer runs on the caller's share
    /// of blocking threads.
    pub async fn search(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        req: Search,
    ) -> Result<SearchResults> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::routed!(
            self,
            caller,
            Op::Search {
                name: name.into(),
                req
            },
            results
        );
        let c = self.open_collection(ticket, caller, name).await?;
        let mut req = search_request(req)?;
        if let Some(done) = c.try_search_quick(&req) {
            return Ok(results(done?));
        }
        let light = c.search_is_light(&req);
        // A light search waits only for a busy lock or a backlog: short
        // work. A filtered or wide one is a scan, and yields to others.
        let work = move |deadline: &Deadline| {
            req.deadline = deadline.clone();
            Ok(results(c.search(&req)?))
        };
        if light {
            ticket.run_short(work).await
        } else {
            ticket.run(work).await
        }
    }

    pub async fn search_batch(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        req: SearchBatch,
    ) -> Result<SearchBatchResults> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::routed!(
            self,
            caller,
            Op::SearchBatch {
                name: name.into(),
                req
            },
            batch
        );
        let max = self.options.max_batch_searches;
        if req.searches.is_empty() || req.searches.len() > max {
            return Err(ServiceError::unprocessable(
                "invalid_request",
                format!("a batch holds 1 to {max} searches"),
            ));
        }
        let c = self.open_collection(ticket, caller, name).await?;
        let mut reqs = req
            .searches
            .into_iter()
            .map(search_request)
            .collect::<Result<Vec<_>>>()?;
        ticket
            .run(move |deadline| {
                reqs.iter_mut().for_each(|r| r.deadline = deadline.clone());
                let found = c.search_batch(&reqs)?;
                Ok(SearchBatchResults {
                    results: found.into_iter().map(results).collect(),
                })
            })
            .await
    }
}

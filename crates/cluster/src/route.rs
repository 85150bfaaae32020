//! The service's operations in cluster mode: each goes to the caller's
//! home shard, a write through the shard's log and a read on its leader.
//! Creating and deleting a collection also change the metadata group's
//! catalog, where the plan's collection count is checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use vectorizer_service::cluster::BoxFuture;
use vectorizer_service::model::CreateCollection;
use vectorizer_service::quota::PlanLimits;
use vectorizer_service::{Answer, Caller, ClusterRouter, Op, Service, ServiceError};

use crate::node::{Forward, Node};
use crate::types::*;

/// The node as the service's router.
pub struct Router(pub Arc<Node>);

impl ClusterRouter for Router {
    fn run<'a>(
        &'a self,
        caller: &'a Caller,
        op: Op,
    ) -> BoxFuture<'a, Result<Answer, ServiceError>> {
        Box::pin(self.0.run(caller, op))
    }
}

/// The user whose data a caller reaches: its own, or the single-tenant
/// deployment's (the nil id).
pub fn owner_of(caller: &Caller) -> Uuid {
    match caller {
        Caller::Tenant(t) => t.user_id,
        Caller::Local | Caller::LocalReader => Uuid::nil(),
    }
}

fn shard_answer(r: Reply) -> Result<(Answer, Option<Deleted>), ServiceError> {
    match r {
        Reply::Shard(ShardReply { result, deleted }) => Ok((result?, deleted)),
        other => Err(ServiceError::Internal(format!(
            "a shard answered {other:?}"
        ))),
    }
}

fn meta_answer(r: Reply) -> Result<MetaReply, ServiceError> {
    match r {
        Reply::Meta(m) => Ok(m?),
        other => Err(ServiceError::Internal(format!(
            "the metadata group answered {other:?}"
        ))),
    }
}

/// Whether an error says for sure that nothing was done.
fn refused(e: &ServiceError) -> bool {
    !matches!(
        e,
        ServiceError::Unavailable(_) | ServiceError::Internal(_) | ServiceError::Timeout
    )
}

impl Node {
    fn main(&self) -> Result<Arc<Service>, ServiceError> {
        self.main
            .upgrade()
            .ok_or_else(|| ServiceError::Unavailable("the node is shutting down".into()))
    }

    /// Runs `op` for `caller` on its home shard.
    pub async fn run(&self, caller: &Caller, op: Op) -> Result<Answer, ServiceError> {
        caller.require(op.permission())?;
        let owner = owner_of(caller);
        let shards = self.options.shards;
        let group = self.meta.read().home_of(&owner, shards) + 1;
        let cmd = |op, limits, metadata| ShardCommand {
            owner,
            caller: caller.clone(),
            op,
            limits,
            metadata,
        };
        if !op.is_write() {
            let fwd = Forward::Read {
                cmd: Box::new(cmd(op, None, BTreeMap::new())),
            };
            return shard_answer(self.submit(group, fwd).await?).map(|(a, _)| a);
        }
        let main = self.main()?;
        let limits = main.plan_limits(caller).await?;
        match op {
            Op::CreateCollection { req } => {
                self.create(&main, caller, owner, group, req, limits).await
            }
            op => {
                let dropped = match &op {
                    Op::DeleteCollection { name } => Some(name.clone()),
                    _ => None,
                };
                let fwd = Forward::Propose {
                    cmd: Command::Shard(Box::new(cmd(op, limits, BTreeMap::new()))),
                };
                let (answer, deleted) = shard_answer(self.submit(group, fwd).await?)?;
                let deleted = deleted.unwrap_or_default();
                if let Some(id) = deleted.hub_id {
                    // Owed to the Hub durably, by this node's outbox.
                    main.record_deletion(id);
                }
                if let Some(name) = dropped {
                    // Out of the catalog: the entry of the collection that
                    // was deleted, not one a create made since. If this is
                    // cut short, a later create of the name completes (see
                    // `create`), and the count is one too high until then.
                    let token = deleted.token;
                    let fwd = Forward::Propose {
                        cmd: Command::Meta(MetaCommand::DropCollection { owner, name, token }),
                    };
                    meta_answer(self.submit(META_GROUP, fwd).await?)?;
                }
                Ok(answer)
            }
        }
    }

    /// A create: the catalog first (the collection count is checked as the
    /// metadata group applies it), then the Hub, then the shard.
    async fn create(
        &self,
        main: &Arc<Service>,
        caller: &Caller,
        owner: Uuid,
        group: u32,
        req: CreateCollection,
        limits: Option<PlanLimits>,
    ) -> Result<Answer, ServiceError> {
        vectorizer_service::service::validate_short_name(&req.name)?;
        // Refused before anything is recorded.
        req.config().validate()?;
        let made = meta_answer(
            self.submit(
                META_GROUP,
                Forward::Propose {
                    cmd: Command::Meta(MetaCommand::CreateCollection {
                        owner,
                        name: req.name.clone(),
                        shard: group - 1,
                        limits,
                    }),
                },
            )
            .await?,
        )?;
        let shard_cmd = |op, metadata| ShardCommand {
            owner,
            caller: caller.clone(),
            op,
            limits,
            metadata,
        };
        let (created, token) = match made {
            MetaReply::Created { token } => (true, token),
            MetaReply::Exists { token } => (false, token),
            MetaReply::Done => {
                return Err(ServiceError::Internal(
                    "the catalog answered a create without a token".into(),
                ));
            }
        };
        // Only a drop naming this token undoes this create's entry.
        let short = req.name.clone();
        let undo = || Forward::Propose {
            cmd: Command::Meta(MetaCommand::DropCollection {
                owner,
                name: short.clone(),
                token: Some(token),
            }),
        };
        if !created {
            // Either it exists, or a create was cut short after the
            // catalog took it: then this create completes it.
            let probe = Forward::Read {
                cmd: Box::new(shard_cmd(
                    Op::GetCollection {
                        name: req.name.clone(),
                    },
                    BTreeMap::new(),
                )),
            };
            if shard_answer(self.submit(group, probe).await?).is_ok() {
                return Err(ServiceError::CollectionExists(req.name));
            }
        }
        let (mut metadata, registration) =
            match main.hub_register(caller, &req.name, req.dimension).await {
                Ok(r) => r,
                Err(e) => {
                    if created && refused(&e) {
                        tracing::info!("the Hub refused a create: its catalog entry is taken out");
                        let _ = self.submit(META_GROUP, undo()).await;
                    }
                    return Err(e);
                }
            };
        metadata.insert(TOKEN_KEY.to_owned(), token.to_string());
        let fwd = Forward::Propose {
            cmd: Command::Shard(Box::new(shard_cmd(Op::CreateCollection { req }, metadata))),
        };
        let out = match self.submit(group, fwd).await {
            Ok(r) => shard_answer(r).map(|(a, _)| a),
            Err(e) => Err(e),
        };
        // A refusal changed nothing on the shard: its entry goes (unless
        // another create of the name got there first, whose entry it is).
        if let Err(e) = &out
            && refused(e)
            && !matches!(e, ServiceError::CollectionExists(_))
        {
            if created {
                tracing::info!(error = %e, "the shard refused a create: its catalog entry is taken out");
            }
            if created && let Err(e) = self.submit(META_GROUP, undo()).await {
                tracing::warn!(error = %e, "could not take a refused create out of the catalog");
            }
            if let Some(r) = registration {
                r.withdraw().await;
            }
        }
        out
    }
}

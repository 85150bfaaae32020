//! Every value that crosses between nodes or into a Raft log survives its
//! exact format: encoded, decoded and encoded again it gives the same
//! bytes. Every `Op` is built with every optional field present and with
//! the values users send (filters of every form, UUID and integer ids,
//! nested and unicode payloads, large integers, extreme floats); the list
//! of ops comes from an exhaustive `match`, so a new operation cannot be
//! left out.

use std::collections::BTreeMap;

use openraft::{CommittedLeaderId, EntryPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;
use vectorizer_cluster::codec;
use vectorizer_cluster::node::{Forward, Forwarded, Hello};
use vectorizer_cluster::types::*;
use vectorizer_cluster::wire::WireError;
use vectorizer_service::caller::{Permission, Tenant};
use vectorizer_service::quota::PlanLimits;
use vectorizer_service::{Answer, Caller, Op};

fn from<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// A filter using every form the language has.
fn filter() -> Value {
    json!({
        "must": [
            {"key": "color", "match": {"value": "red"}},
            {"key": "meta.lang", "match": {"any": ["en", "日本語", "\u{2028}x"]}},
            {"key": "n", "match": {"value": -9_223_372_036_854_775_808i64}},
            {"key": "flag", "match": {"value": false}},
            {"key": "ids", "match": {"any": [1, 9_223_372_036_854_775_807i64]}},
            {"key": "price", "range": {"gt": -1e300, "gte": 0.1, "lt": 1e-300, "lte": 12}},
            {"has_id": [42, "7c9e6679-7425-40de-944b-e07fc1f90ae7", 0]}
        ],
        "should": [
            {"filter": {"must_not": [{"key": "a.b.c", "match": {"value": "x"}}]}},
            {"must": [{"key": "tags", "match": {"any": [true]}}], "should": [{"has_id": [3]}]}
        ],
        "must_not": [{"key": "é", "range": {"lt": 5}}],
        "min_should": {"conditions": [
            {"key": "f", "match": {"value": 2.5}},
            {"key": "c", "match": {"except": ["a", 3, false, -0.25]}},
            {"key": "t", "match": {"text": "needle \u{2028}"}},
            {"key": "tags", "values_count": {"gt": 0, "gte": 1, "lt": 9, "lte": 8}},
            {"is_empty": {"key": "e.f"}},
            {"is_null": {"key": "n"}},
            {"nested": {"key": "items", "filter": {"must": [{"key": "sku", "match": {"value": "x"}}], "min_should": {"conditions": [{"is_null": {"key": "q"}}], "min_count": 1}}}}
        ], "min_count": 3}
    })
}

fn payload() -> Value {
    json!({
        "title": "Ünïcødé ✓ \u{202e}bidi",
        "nested": {"deep": {"list": [1, -2, 3.5, null, true, "s", {"k": []}]}},
        "big": 18_446_744_073_709_551_615u64,
        "neg": -9_223_372_036_854_775_808i64,
        "tiny": 5e-324,
        "float": 0.1
    })
}

fn vector() -> Value {
    json!([
        0.0,
        -0.0,
        1.0,
        -1.5,
        3.4028235e38,
        1.1754944e-38,
        1e-45,
        0.333_333_34
    ])
}

fn ids() -> Value {
    json!([
        0,
        18_446_744_073_709_551_615u64,
        "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    ])
}

fn search() -> Value {
    json!({
        "vector": vector(), "limit": 10, "filter": filter(), "ef": 128,
        "score_threshold": 0.25, "with_payload": false, "with_vector": true, "exact": true
    })
}

/// The sample after `prev` (the first for none): each variant once.
fn next_op(prev: Option<&Op>) -> Option<Op> {
    let name = || "docs-ß".to_owned();
    Some(match prev {
        None => Op::CreateCollection {
            req: from(json!({
                "name": "docs", "dimension": 8, "metric": "dot",
                "hnsw": {"m": 32, "ef_construction": 200, "ef_search": 100},
                "payload_index": ["color", "meta.lang"], "target_recall": 0.975,
                "quantization": {"type": "int8", "rescore": false, "oversampling": 1.5}
            })),
        },
        Some(Op::CreateCollection { .. }) => Op::DeleteCollection { name: name() },
        Some(Op::DeleteCollection { .. }) => Op::ListCollections,
        Some(Op::ListCollections) => Op::GetCollection { name: name() },
        Some(Op::GetCollection { .. }) => Op::UpdateCollection {
            name: name(),
            req: from(json!({"hnsw": {"ef_search": 4096}, "target_recall": null})),
        },
        Some(Op::UpdateCollection { .. }) => Op::CreatePayloadIndex {
            name: name(),
            req: from(json!({"field": "meta.lang"})),
        },
        Some(Op::CreatePayloadIndex { .. }) => Op::DropPayloadIndex {
            name: name(),
            field: "meta.lang.ü".into(),
        },
        Some(Op::DropPayloadIndex { .. }) => Op::Upsert {
            name: name(),
            req: from(json!({"points": [
                {"id": 1, "vector": vector(), "payload": payload()},
                {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "vector": vector(), "payload": {}},
                {"id": 18_446_744_073_709_551_615u64, "vector": vector()}
            ]})),
        },
        Some(Op::Upsert { .. }) => Op::GetPoint {
            name: name(),
            id: "7c9e6679-7425-40de-944b-e07fc1f90ae7".into(),
        },
        Some(Op::GetPoint { .. }) => Op::GetPoints {
            name: name(),
            req: from(json!({"ids": ids(), "with_payload": false, "with_vector": true})),
        },
        Some(Op::GetPoints { .. }) => Op::DeletePoints {
            name: name(),
            req: from(json!({"ids": ids(), "filter": filter()})),
        },
        Some(Op::DeletePoints { .. }) => Op::SetPayload {
            name: name(),
            req: from(json!({"payload": payload(), "ids": ids(), "filter": filter()})),
            overwrite: true,
        },
        Some(Op::SetPayload { .. }) => Op::DeletePayload {
            name: name(),
            req: from(json!({"keys": ["title", "nested", "ü"], "ids": ids(), "filter": filter()})),
        },
        Some(Op::DeletePayload { .. }) => Op::Scroll {
            name: name(),
            req: from(json!({
                "limit": 100, "cursor": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                "filter": filter(), "with_payload": false, "with_vector": true
            })),
        },
        Some(Op::Scroll { .. }) => Op::Count {
            name: name(),
            req: from(json!({"filter": filter()})),
        },
        Some(Op::Count { .. }) => Op::Search {
            name: name(),
            req: from(search()),
        },
        Some(Op::Search { .. }) => Op::SearchBatch {
            name: name(),
            req: from(json!({"searches": [search(), {"vector": vector(), "limit": 1}]})),
        },
        Some(Op::SearchBatch { .. }) => Op::Usage,
        Some(Op::Usage) => return None,
    })
}

fn ops() -> Vec<Op> {
    let mut out: Vec<Op> = Vec::new();
    while let Some(op) = next_op(out.last()) {
        out.push(op);
    }
    out
}

fn tenant() -> Caller {
    Caller::Tenant(Tenant {
        user_id: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        access_key_id: Uuid::from_u128(7),
        project_id: Some(Uuid::from_u128(8)),
        permissions: vec![
            Permission::Read,
            Permission::Write,
            Permission::Delete,
            Permission::Admin,
        ],
        plan: "pro-ü".into(),
    })
}

fn limits() -> Option<PlanLimits> {
    Some(PlanLimits {
        max_collections: 10,
        max_vectors: u64::MAX,
        max_storage_bytes: 1 << 40,
    })
}

fn shard(op: Op) -> Command {
    Command::Shard(Box::new(ShardCommand {
        owner: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        caller: tenant(),
        op,
        limits: limits(),
        metadata: BTreeMap::from([
            ("hub_collection_id".into(), Uuid::from_u128(9).to_string()),
            (TOKEN_KEY.into(), "123".into()),
        ]),
    }))
}

fn meta_commands() -> Vec<MetaCommand> {
    let all = vec![
        MetaCommand::Init(vectorizer_cluster::topology::Topology {
            nodes: vec![(1, "127.0.0.1:1".into()), (2, "[::1]:2".into())],
            shards: 4,
            replication: 2,
        }),
        MetaCommand::CreateCollection {
            owner: Uuid::from_u128(1),
            name: "docs".into(),
            shard: 3,
            limits: limits(),
        },
        MetaCommand::DropCollection {
            owner: Uuid::from_u128(1),
            name: "docs".into(),
            token: Some(u64::MAX),
        },
        MetaCommand::ReplaceNode {
            old: 3,
            new: 4,
            addr: "host:9".into(),
        },
    ];
    // Every variant is above (a new one fails to compile here).
    for c in &all {
        match c {
            MetaCommand::Init(_)
            | MetaCommand::CreateCollection { .. }
            | MetaCommand::DropCollection { .. }
            | MetaCommand::ReplaceNode { .. } => {}
        }
    }
    all
}

fn answers() -> Vec<Answer> {
    let record = json!({"id": 5, "vector": vector(), "payload": payload()});
    let hit = json!({"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "score": -0.5, "payload": payload(), "vector": vector()});
    let detail = json!({
        "name": "docs", "dimension": 8, "metric": "euclidean",
        "hnsw": {"m": 16, "ef_construction": 128, "ef_search": 64},
        "payload_index": ["a"], "points": u64::MAX, "bytes": 1, "memory_bytes": 2,
        "unindexed_points": 3, "created_at_ms": 1_700_000_000_000u64,
        "loaded": true, "target_recall": 0.9,
        "recall": {"target": 0.9, "estimate": 0.912_345_678_9, "ef": 96, "queries": 256,
            "source": "stored_points", "points": 30_000, "measured_at_ms": 1_700_000_000_001u64,
            "took_ms": 4_321},
        "quantization": {"type": "int8", "rescore": true, "oversampling": 3.0}
    });
    let all: Vec<Answer> = [
        json!({"answer": "detail", "body": detail}),
        json!({"answer": "list", "body": {"collections": [{"name": "a", "dimension": 3, "metric": "cosine", "points": 1, "bytes": 2}, {"name": "b", "dimension": 2, "metric": "manhattan", "points": 0, "bytes": 0}]}}),
        json!({"answer": "done"}),
        json!({"answer": "upserted", "body": {"upserted": 3}}),
        json!({"answer": "point", "body": record}),
        json!({"answer": "points", "body": {"points": [record, {"id": 6}]}}),
        json!({"answer": "deleted", "body": {"deleted": 2}}),
        json!({"answer": "updated", "body": {"updated": 2}}),
        json!({"answer": "page", "body": {"points": [record], "next_cursor": 18_446_744_073_709_551_615u64}}),
        json!({"answer": "counted", "body": {"count": 9}}),
        json!({"answer": "results", "body": {"results": [hit]}}),
        json!({"answer": "batch", "body": {"results": [{"results": [hit]}, {"results": []}]}}),
        json!({"answer": "usage", "body": {
            "collections": 1, "vectors": 2, "storage_bytes": 3,
            "limits": {"max_collections": 1, "max_vectors": 2, "max_storage_bytes": 3},
            "per_collection": [{"name": "a", "vectors": 2, "storage_bytes": 3}]
        }}),
    ]
    .into_iter()
    .map(from)
    .collect();
    for a in &all {
        match a {
            Answer::Detail(_)
            | Answer::List(_)
            | Answer::Done
            | Answer::Upserted(_)
            | Answer::Point(_)
            | Answer::Points(_)
            | Answer::Deleted(_)
            | Answer::Updated(_)
            | Answer::Page(_)
            | Answer::Counted(_)
            | Answer::Results(_)
            | Answer::Batch(_)
            | Answer::Usage(_) => {}
        }
    }
    all
}

/// `v` in the wire's format, decoded and encoded again: the same bytes.
fn wire<T: Serialize + DeserializeOwned>(v: &T) -> Vec<u8> {
    let bytes = codec::to_bytes(v).unwrap();
    let back: T = codec::from_bytes(&bytes).unwrap();
    assert_eq!(codec::to_bytes(&back).unwrap(), bytes);
    bytes
}

/// `cmd` as a log entry, read back and written again: the same bytes.
fn entry(cmd: Command) {
    let e = Entry {
        log_id: LogId::new(CommittedLeaderId::new(u64::MAX - 1, 3), u64::MAX - 2),
        payload: EntryPayload::Normal(cmd),
    };
    let bytes = codec::encode_entry(&e).unwrap();
    assert_eq!(codec::log_id_of(&bytes).unwrap(), e.log_id);
    let back = codec::decode_entry(&bytes).unwrap();
    assert!(
        !matches!(
            back.payload,
            EntryPayload::Normal(Command::Undecodable { .. })
        ),
        "{:?}",
        back.payload
    );
    assert_eq!(codec::encode_entry(&back).unwrap(), bytes);
}

#[test]
fn every_op_crosses_the_log_and_the_wire_unchanged() {
    let ops = ops();
    let kinds: std::collections::HashSet<_> = ops.iter().map(std::mem::discriminant).collect();
    assert_eq!(kinds.len(), ops.len(), "one sample per operation");
    for op in ops {
        let what = format!("{op:?}");
        let cmd = shard(op);
        codec::round_trip(&cmd, usize::MAX).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        wire(&Forward::Propose { cmd: cmd.clone() });
        if let Command::Shard(s) = &cmd {
            wire(&Forward::Read { cmd: s.clone() });
        }
        entry(cmd);
    }
}

#[test]
fn every_metadata_command_and_internal_message_crosses_unchanged() {
    for m in meta_commands() {
        let cmd = Command::Meta(m);
        codec::round_trip(&cmd, usize::MAX).unwrap();
        entry(cmd);
    }
    for a in answers() {
        let reply = Reply::Shard(ShardReply {
            result: Ok(a),
            deleted: Some(Deleted {
                hub_id: Some(Uuid::from_u128(5)),
                token: Some(7),
            }),
        });
        wire(&Forwarded::Reply { reply });
    }
    let refused = WireError {
        kind: "quota".into(),
        code: "vectors".into(),
        message: "over ✓".into(),
        figures: [1, 2, u64::MAX],
    };
    for f in [
        Forwarded::Reply {
            reply: Reply::Shard(ShardReply {
                result: Err(refused.clone()),
                deleted: None,
            }),
        },
        Forwarded::Reply {
            reply: Reply::Meta(Ok(MetaReply::Created { token: 9 })),
        },
        Forwarded::Reply {
            reply: Reply::Meta(Err(refused)),
        },
        Forwarded::Reply { reply: Reply::None },
        Forwarded::NotLeader { leader: Some(2) },
        Forwarded::Unavailable {
            reason: "no quorum".into(),
        },
    ] {
        wire(&f);
    }
    for f in [
        Forward::Replace {
            old: 1,
            new: 2,
            addr: "h:1".into(),
        },
        Forward::Remove { node: 3 },
        Forward::Rejoin {
            node: 3,
            addr: "h:3".into(),
        },
    ] {
        wire(&f);
    }
    wire(&Hello {
        node: 1,
        formed: true,
        members: vec![1, 2, 3],
        matched: Some(u64::MAX),
    });
}

#[test]
fn a_command_over_the_bound_is_refused_before_it_is_decoded() {
    let cmd = shard(
        next_op(Some(&Op::CreatePayloadIndex {
            name: "d".into(),
            req: from(json!({"field": "f"})),
        }))
        .unwrap(),
    );
    let n = codec::round_trip(&cmd, usize::MAX).unwrap();
    assert!(matches!(
        codec::round_trip(&cmd, n - 1),
        Err(codec::Unfit::TooLarge(m)) if m == n
    ));
    assert_eq!(codec::round_trip(&cmd, n).unwrap(), n);
}

#[test]
fn an_entry_that_cannot_be_decoded_keeps_its_log_id() {
    let e = Entry {
        log_id: LogId::new(CommittedLeaderId::new(4, 2), 77),
        payload: EntryPayload::Normal(shard(Op::Usage)),
    };
    let mut bytes = codec::encode_entry(&e).unwrap();
    bytes.truncate(codec::HEADER);
    bytes.extend_from_slice(&[0xc1, 0xc1, 0xc1]);
    assert_eq!(codec::log_id_of(&bytes).unwrap(), e.log_id);
    let back = codec::decode_entry(&bytes).unwrap();
    assert_eq!(back.log_id, e.log_id);
    assert!(matches!(
        back.payload,
        EntryPayload::Normal(Command::Undecodable { index: 77, .. })
    ));
    // Never proposed, never sent.
    assert!(codec::round_trip(&back.payload_command(), usize::MAX).is_err());
}

trait PayloadCommand {
    fn payload_command(&self) -> Command;
}

impl PayloadCommand for Entry {
    fn payload_command(&self) -> Command {
        match &self.payload {
            EntryPayload::Normal(c) => c.clone(),
            _ => panic!("not a command"),
        }
    }
}

#[test]
fn entries_written_as_json_by_earlier_builds_are_read() {
    let e = Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 1), 5),
        payload: EntryPayload::Normal(shard(Op::Count {
            name: "docs".into(),
            req: Default::default(),
        })),
    };
    let json = serde_json::to_vec(&e).unwrap();
    let back = codec::decode_entry(&json).unwrap();
    assert_eq!(back.log_id, e.log_id);
    assert_eq!(
        codec::encode_entry(&back).unwrap(),
        codec::encode_entry(&e).unwrap()
    );
}

/// A recall target of `null` (none) is kept apart from one left out (the
/// server's default): both cross the log as they were sent.
#[test]
fn a_null_target_recall_stays_null() {
    for (body, want) in [
        (json!({"target_recall": null}), Some(None)),
        (json!({"target_recall": 0.9}), Some(Some(0.9))),
        (json!({"hnsw": {"ef_search": 8}}), None),
    ] {
        let op = Op::UpdateCollection {
            name: "docs".into(),
            req: from(body.clone()),
        };
        let bytes = wire(&shard(op));
        let Command::Shard(s) = codec::from_bytes::<Command>(&bytes).unwrap() else {
            panic!("{body}")
        };
        let Op::UpdateCollection { req, .. } = s.op else {
            panic!("{body}")
        };
        assert_eq!(req.target_recall, want, "{body}");
    }
    let op = Op::CreateCollection {
        req: from(json!({"name": "a", "dimension": 2, "metric": "dot", "target_recall": null})),
    };
    let bytes = wire(&shard(op));
    let Command::Shard(s) = codec::from_bytes::<Command>(&bytes).unwrap() else {
        panic!("create")
    };
    let Op::CreateCollection { req: create } = s.op else {
        panic!("create")
    };
    assert_eq!(create.config().target_recall, None);
    let create: vectorizer_service::model::CreateCollection =
        from(json!({"name": "a", "dimension": 2, "metric": "dot"}));
    assert_eq!(create.config().target_recall, Some(0.95));
}

//! Running a tool: its arguments parsed exactly as the REST body is (the
//! same parser, limits and messages), the one service entry point of its
//! operation called with the caller's admitted call, and the answer or
//! the error turned into a tool result.

use std::sync::Arc;

use std::collections::BTreeMap;

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::de::value::MapDeserializer;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use vectorizer_service::aliases::AliasActions;
use vectorizer_service::backup::{CreateBackup, RestoreBackup, quiet};
use vectorizer_service::model::*;
use vectorizer_service::{Call, Service, ServiceError};

use crate::answer::Weight;
use crate::error::ApiError;

/// Arguments longer than this are read on one of the caller's worker
/// threads, as large REST bodies are.
pub const PARSE_IN_PLACE: usize = 64 << 10;
/// Longest argument name or tool name echoed back in a message.
const ECHO: usize = 64;
/// Answers weighing more are turned into JSON on the caller's workers.
const LARGE: usize = 256 << 10;
/// An answer whose JSON is at most this long is also its text rendering.
const TEXT_IN_FULL: usize = 4 << 10;

/// How a tool call went wrong.
pub enum Failure {
    /// Malformed arguments: a JSON-RPC invalid-params error.
    Invalid(String),
    /// The operation failed: a tool result with `isError`.
    Failed(ApiError),
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        Failure::Failed(ApiError::from(e))
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Failed(e)
    }
}

/// A tool's answer.
pub struct Done {
    pub value: Value,
    /// Points, hits or collections in it, where it has them.
    pub count: Option<usize>,
    /// The answer's JSON text, when it is short enough to show in full.
    pub text: Option<String>,
}

/// A tool call's arguments: each top-level argument kept as its JSON text
/// until the tool's typed request is read from it, so that no generic
/// value tree is ever built from a tenant's input. A name given twice is
/// refused, as REST refuses a duplicate field.
#[derive(Debug, Default)]
pub struct Args(BTreeMap<String, Box<RawValue>>);

impl<'de> serde::Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Args, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Args, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, Box<RawValue>>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate argument `{}`",
                            echo(&k)
                        )));
                    }
                    out.insert(k, v);
                }
                Ok(Args(out))
            }
        }
        d.deserialize_map(Fields)
    }
}

impl Args {
    /// The arguments object's text; `null` reads as no arguments.
    pub fn parse(raw: &RawValue) -> Result<Args, Failure> {
        if raw.get() == "null" {
            return Ok(Args::default());
        }
        serde_json::from_str(raw.get()).map_err(|e| {
            let m = e.to_string();
            Failure::Invalid(match m.find("duplicate argument") {
                Some(i) => m[i..]
                    .rsplit_once(" at line ")
                    .map_or(m[i..].to_owned(), |(head, _)| head.to_owned()),
                None => "`arguments`: expected an object".into(),
            })
        })
    }

    /// The arguments' length in bytes of JSON.
    pub fn len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.get().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Argument `name` as a string, if it is one.
    fn string(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }
}

/// `s` cut to a length that is safe to echo back.
pub fn echo(s: &str) -> String {
    crate::error::cut(s.to_owned(), ECHO)
}

/// The `collection` argument, taken out of the others.
pub fn take_collection(args: &mut Args, takes: bool) -> Result<Option<String>, Failure> {
    if !takes {
        // A create names its collection in `name` (kept for the log).
        return Ok(args.string("name"));
    }
    match args.0.remove("collection") {
        Some(v) => serde_json::from_str::<String>(v.get())
            .map(Some)
            .map_err(|_| {
                Failure::Invalid("`collection`: expected the collection's name as a string".into())
            }),
        None => Err(Failure::Invalid("missing argument `collection`".into())),
    }
}

/// The remaining arguments as the REST body `B`: read straight from their
/// JSON text, with the REST parser's messages.
async fn body<B: DeserializeOwned + Send + 'static>(
    call: &Arc<Call>,
    args: Args,
) -> Result<B, Failure> {
    if args.len() <= PARSE_IN_PLACE {
        return from_args(&args);
    }
    call.run_blocking(move || from_args(&args)).await?
}

fn from_args<B: DeserializeOwned>(args: &Args) -> Result<B, Failure> {
    let fields = args.0.iter().map(|(k, v)| (k.as_str(), &**v));
    let de = MapDeserializer::<_, serde_json::Error>::new(fields);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = echo(&e.path().to_string());
        let m = e.into_inner().to_string();
        // Positions would count within one argument's text: left out.
        let m = match m.rfind(" at line ") {
            Some(i) => &m[..i],
            None => &m,
        };
        let m = crate::extract::plain(m);
        Failure::Invalid(match path.as_str() {
            "" | "." => m,
            p => format!("`{p}`: {m}"),
        })
    })
}

/// A tool that takes no arguments but the collection.
fn none(args: &Args) -> Result<(), Failure> {
    match args.0.keys().next() {
        None => Ok(()),
        Some(k) => Err(Failure::Invalid(format!(
            "unknown argument `{}`: this tool takes no other arguments",
            echo(k)
        ))),
    }
}

/// The answer as JSON (off the runtime when it is large).
async fn done<T: Serialize + Weight + Send + 'static>(
    call: &Arc<Call>,
    out: T,
    count: impl FnOnce(&T) -> Option<usize>,
) -> Result<Done, Failure> {
    let count = count(&out);
    let weight = out.weight();
    // Through text, so that numbers read as REST writes them (an f32
    // score stays `0.99503714`, not its f64 widening).
    let encode = move || {
        let t = serde_json::to_vec(&out)?;
        let value = serde_json::from_slice::<Value>(&t)?;
        let text = (t.len() <= TEXT_IN_FULL)
            .then(|| String::from_utf8(t).ok())
            .flatten();
        Ok::<_, serde_json::Error>((value, text))
    };
    let (value, text) = if weight > LARGE {
        call.run_blocking(encode).await?
    } else {
        encode()
    }
    .map_err(|_| Failure::Failed(ApiError::internal()))?;
    Ok(Done { value, count, text })
}

/// Runs tool `name` for `call`.
pub async fn run(
    service: &Arc<Service>,
    call: &Arc<Call>,
    name: &str,
    collection: Option<&str>,
    args: Args,
) -> Result<Done, Failure> {
    let s = service;
    let c = collection.unwrap_or_default();
    match name {
        "list_collections" => {
            none(&args)?;
            let out = s.list_collections(call).await?;
            done(call, out, |o| Some(o.collections.len())).await
        }
        "get_collection" => {
            none(&args)?;
            let out = s.get_collection(call, c).await?;
            done(call, out, |_| None).await
        }
        "create_collection" => {
            let req: CreateCollection = body(call, args).await?;
            let out = s.create_collection(call, req).await?;
            done(call, out, |_| None).await
        }
        "delete_collection" => {
            none(&args)?;
            s.delete_collection(call, c).await?;
            Ok(Done {
                value: json!({"deleted": true}),
                count: None,
                text: Some(r#"{"deleted":true}"#.to_owned()),
            })
        }
        "upsert_points" => {
            let req: UpsertPoints = body(call, args).await?;
            let out = s.upsert(call, c, req).await?;
            done(call, out, |o| Some(o.upserted)).await
        }
        "get_points" => {
            let req: GetPoints = body(call, args).await?;
            let out = s.get_points(call, c, req).await?;
            done(call, out, |o| Some(o.points.len())).await
        }
        "delete_points" => {
            let req: DeletePoints = body(call, args).await?;
            let out = s.delete_points(call, c, req).await?;
            done(call, out, |o| Some(o.deleted)).await
        }
        "scroll_points" => {
            let req: Scroll = body(call, args).await?;
            let out = s.scroll(call, c, req).await?;
            done(call, out, |o| Some(o.points.len())).await
        }
        "count_points" => {
            let req: Count = body(call, args).await?;
            let out = s.count(call, c, req).await?;
            done(call, out, |o| Some(o.count)).await
        }
        "search" => {
            let req: Search = body(call, args).await?;
            let out = s.search(call, c, req).await?;
            done(call, out, |o| Some(o.results.len())).await
        }
        "search_batch" => {
            let req: SearchBatch = body(call, args).await?;
            let out = s.search_batch(call, c, req).await?;
            done(call, out, |o| {
                Some(o.results.iter().map(|r| r.results.len()).sum())
            })
            .await
        }
        "update_collection" => {
            let req: UpdateCollection = body(call, args).await?;
            let out = s.update_collection(call, c, req).await?;
            done(call, out, |_| None).await
        }
        "set_payload" | "overwrite_payload" => {
            let req: SetPayload = body(call, args).await?;
            let out = s
                .set_payload(call, c, req, name == "overwrite_payload")
                .await?;
            done(call, out, |o| Some(o.updated)).await
        }
        "delete_payload" => {
            let req: DeletePayload = body(call, args).await?;
            let out = s.delete_payload(call, c, req).await?;
            done(call, out, |o| Some(o.updated)).await
        }
        "create_payload_index" => {
            let req: CreatePayloadIndex = body(call, args).await?;
            let out = s.create_payload_index(call, c, req).await?;
            done(call, out, |_| None).await
        }
        "drop_payload_index" => {
            let req: CreatePayloadIndex = body(call, args).await?;
            let out = s.drop_payload_index(call, c, &req.field).await?;
            done(call, out, |_| None).await
        }
        "list_aliases" => {
            none(&args)?;
            let out = s.list_aliases(call).await?;
            done(call, out, |o| Some(o.aliases.len())).await
        }
        "update_aliases" => {
            let req: AliasActions = body(call, args).await?;
            let out = s.update_aliases(call, req).await?;
            done(call, out, |o| Some(o.aliases.len())).await
        }
        "list_backups" => {
            none(&args)?;
            let out = s.list_backups(call).await?;
            done(call, out, |o| Some(o.backups.len())).await
        }
        "create_backup" => {
            let req: CreateBackup = body(call, args).await?;
            let out = s.create_backup(call, req, quiet()).await?;
            done(call, out, |_| None).await
        }
        "get_backup" => {
            let req: BackupRef = body(call, args).await?;
            let out = s.get_backup(call, &req.backup_id).await?;
            done(call, out, |_| None).await
        }
        "delete_backup" => {
            let req: BackupRef = body(call, args).await?;
            s.delete_backup(call, &req.backup_id).await?;
            Ok(Done {
                value: json!({"deleted": true}),
                count: None,
                text: Some(r#"{"deleted":true}"#.to_owned()),
            })
        }
        "restore_backup" => {
            let req: RestoreBackup = body(call, args).await?;
            let out = s.restore_backup(call, req, quiet()).await?;
            done(call, out, |o| Some(o.restored.len())).await
        }
        "get_usage" => {
            none(&args)?;
            let out = s.usage(call).await?;
            done(call, out, |o| Some(o.collections)).await
        }
        _ => Err(Failure::Invalid(format!("unknown tool `{}`", echo(name)))),
    }
}

/// A backup named by its id (REST has it in the path).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRef {
    backup_id: String,
}

/// A successful tool result: the answer as structured content, and as
/// text for clients that show only text (in full when short).
pub fn success(d: Done) -> CallToolResult {
    let text = match d.text {
        Some(t) => t,
        None => match d.count {
            Some(n) => format!("{n} results; the whole answer is in the structured content"),
            None => "done; the whole answer is in the structured content".to_owned(),
        },
    };
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(d.value);
    r
}

/// A failed tool result: the REST error body as structured content, and
/// `code: message` as text.
pub fn failure(e: &ApiError) -> CallToolResult {
    let mut error = json!({"code": e.code, "message": e.message});
    if let (Some(Value::Object(extra)), Some(obj)) = (&e.extra, error.as_object_mut()) {
        obj.extend(extra.clone());
    }
    if let Some(wait) = e.retry_after {
        error["retry_after_seconds"] = json!(wait.as_secs().max(1));
    }
    let mut r = CallToolResult::error(vec![ContentBlock::text(format!(
        "{}: {}",
        e.code, e.message
    ))]);
    r.structured_content = Some(json!({"error": error}));
    r
}

//! `vectorizer cluster`: the operator's commands for cluster mode, through
//! any node's REST port with the operator token
//! (`VECTORIZER_OPERATOR_TOKEN`).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Prints the cluster as a node sees it: nodes, groups, leaders, lag.
    Status {
        /// A node's REST address.
        #[arg(long, default_value = "http://127.0.0.1:15002")]
        url: String,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Puts a new node (empty disk, an id never used) in the place of a
    /// lost one, in the metadata and in every group the lost one was in.
    /// Run it first, then start the new node.
    ReplaceNode {
        /// A live node's REST address.
        #[arg(long, default_value = "http://127.0.0.1:15002")]
        url: String,
        /// The lost node's id.
        #[arg(long)]
        old: u64,
        /// The new node's id.
        #[arg(long)]
        new: u64,
        /// The new node's internal address, host:port.
        #[arg(long)]
        addr: String,
    },
    /// Drops a node's copy of one group (one that `status` shows as
    /// failed) and has the group's leader send it again; the node keeps
    /// serving its other groups meanwhile.
    RepairGroup {
        /// A live node's REST address.
        #[arg(long, default_value = "http://127.0.0.1:15002")]
        url: String,
        /// The node whose copy is repaired.
        #[arg(long)]
        node: u64,
        /// The group: `meta` or `shard-<s>`.
        #[arg(long)]
        group: String,
    },
}

fn token() -> Result<String, String> {
    std::env::var("VECTORIZER_OPERATOR_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "set VECTORIZER_OPERATOR_TOKEN to the nodes' operator token".into())
}

pub fn run(command: ClusterCommand) -> Result<(), String> {
    let token = token()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match command {
        ClusterCommand::Status { url, json } => {
            let s = rt.block_on(vectorizer_cluster::admin::call(
                &url, &token, "/cluster", None,
            ))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?
                );
            } else {
                print_status(&s);
            }
        }
        ClusterCommand::ReplaceNode {
            url,
            old,
            new,
            addr,
        } => {
            let body = serde_json::json!({"old": old, "new": new, "addr": addr});
            let s = rt.block_on(vectorizer_cluster::admin::call(
                &url,
                &token,
                "/cluster/replace-node",
                Some(body),
            ))?;
            println!("node {new} replaces node {old}; start it now");
            print_status(&s);
        }
        ClusterCommand::RepairGroup { url, node, group } => {
            let body = serde_json::json!({"node": node, "group": group});
            let s = rt.block_on(vectorizer_cluster::admin::call(
                &url,
                &token,
                "/cluster/repair-group",
                Some(body),
            ))?;
            println!("node {node}'s copy of {group} is repaired");
            print_status(&s);
        }
    }
    Ok(())
}

fn print_status(s: &serde_json::Value) {
    let v = |x: &serde_json::Value| match x {
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    println!(
        "node {}  shards {}  replication {}  users {}  collections {}",
        v(&s["node"]),
        v(&s["shards"]),
        v(&s["replication"]),
        v(&s["users"]),
        v(&s["collections"])
    );
    for n in s["nodes"].as_array().into_iter().flatten() {
        println!(
            "  node {:>4}  {}",
            v(&n["id"]),
            n["addr"].as_str().unwrap_or("-")
        );
    }
    println!(
        "{:<10} {:<10} {:>6} {:>7} {:>10} {:>10}  members  lag",
        "group", "role", "term", "leader", "last log", "applied"
    );
    for g in s["groups"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:<10} {:>6} {:>7} {:>10} {:>10}  {}  {}",
            g["group"].as_str().unwrap_or("-"),
            g["role"].as_str().unwrap_or("-"),
            v(&g["term"]),
            v(&g["leader"]),
            v(&g["last_log_index"]),
            v(&g["applied_index"]),
            v(&g["members"]),
            v(&g["lag"]),
        );
        if let Some(why) = g["failed"].as_str() {
            println!("           failed: {why}");
        }
    }
}

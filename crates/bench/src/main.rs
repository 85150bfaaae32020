//! `vectorizer-bench`: benchmark commands that print figures.
//!
//! - `engine [--out DIR] [--quick]`: the storage engine on seeded data.
//! - `engine-open DIR`: opens a database and prints open time and memory
//!   (run by `engine` in a fresh process, so that memory is measured clean).
//! - `engine-search DIR [--passes N] [--json]`: search figures only, on
//!   what `engine` left in DIR.
//! - `http --url URL [--target vectorizer|chroma]`: HTTP load on a running
//!   server (see `scripts/bench_http.py`).
//! - `noisy [--bin PATH] [--seconds N]`: one tenant's search latency alone
//!   and while another runs its heaviest requests at its limit.
//! - `backup [--bin PATH]`: backup, download, upload and restore
//!   throughput of a 100,000 × 128 collection, and the archive's size.
//! - `cluster [--bin PATH] [--seconds N] [--kills N]`: write throughput,
//!   the servers' CPU per point written and search QPS of a three-node
//!   cluster against one node, then failover times over N leader kills
//!   (default 20), on this machine.
//! - `tenants [--bin PATH] [--counts 1000,10000,100000] [--work DIR]`: memory, threads
//!   and open files, start-up, first and warm search latency and Zipf
//!   throughput of a server holding N collections of 100 vectors.
//! - `tuning [--points N] [--dims 128,384]`: how soon a collection loaded
//!   in bulk has tuned its search breadth to its target recall, and the
//!   recall and QPS searches without `ef` then get, on hard data.

mod backup;
mod cluster;
mod engine;
mod http;
mod noisy;
mod sys;
mod tenants;
mod tuning;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("engine") => engine::run(&args[1..]),
        Some("engine-open") => engine::open_only(&args[1..]),
        Some("engine-search") => engine::search_only(&args[1..]),
        Some("http") => http::run(&args[1..]),
        Some("noisy") => noisy::run(&args[1..]),
        Some("backup") => backup::run(&args[1..]),
        Some("cluster") => cluster::run(&args[1..]),
        Some("tenants") => tenants::run(&args[1..]),
        Some("tuning") => tuning::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: vectorizer-bench engine [--out DIR] [--quick] | engine-open DIR | engine-search DIR [--passes N] [--json] | http --url URL [--target vectorizer|chroma] | noisy [--bin PATH] [--seconds N] | backup [--bin PATH] | cluster [--bin PATH] [--seconds N] [--kills N] | tenants [--bin PATH] [--counts 1000,10000,100000] [--work DIR] | tuning [--points N] [--dims 128,384]"
            );
            2
        }
    };
    std::process::exit(code);
}

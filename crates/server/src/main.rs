//! The `vectorizer` command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use vectorizer_server::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "vectorizer",
    version,
    about = "Vectorizer: a vector database server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server (defaults: 127.0.0.1:15002, ./data, Hub disabled).
    Serve {
        /// A YAML config file (see config.yml); optional.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where collections are stored.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        host: Option<String>,
        /// 0 picks a free port (the address is printed).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Loads and validates the configuration, prints it, and exits.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve {
            config,
            data_dir,
            host,
            port,
        } => {
            let overrides = Overrides {
                data_dir,
                host,
                port,
            };
            match Config::load(config.as_deref(), &overrides) {
                Err(e) => {
                    eprintln!("vectorizer: {e}");
                    2
                }
                Ok(cfg) => serve(cfg),
            }
        }
        Command::CheckConfig { config } => {
            match Config::load(config.as_deref(), &Overrides::default()) {
                Ok(cfg) => {
                    println!("{cfg:#?}");
                    0
                }
                Err(e) => {
                    eprintln!("vectorizer: {e}");
                    2
                }
            }
        }
    };
    std::process::exit(code);
}

fn serve(cfg: Config) -> i32 {
    vectorizer_server::init_logging(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .thread_name("vectorizer")
        .build()
        .expect("starting the runtime");
    match rt.block_on(vectorizer_server::run(cfg)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("vectorizer: {e}");
            1
        }
    }
}

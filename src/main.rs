//! `hearth`: a Matrix homeserver. See README.md for configuration.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// jemalloc rather than glibc's malloc: measured with `scripts/bench-memory` (README, Memory),
/// glibc's per-thread arenas kept most of a login burst's memory (over 800 MiB idle afterwards)
/// where jemalloc returned to under 60 MiB within ten seconds.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "hearth", version, about = "A Matrix homeserver", long_about = None)]
struct Args {
    /// Configuration file (TOML). Without one, built-in defaults apply; `HEARTH_*` environment
    /// variables override either, e.g. HEARTH_STORAGE__PATH=/var/lib/hearth.
    #[arg(short, long, env = "HEARTH_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Administer users, rooms, registration tokens and media, through a running server's
    /// admin API or (--offline) directly on its stopped database.
    Admin(hearth::admin_cli::AdminArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = hearth::Config::load(args.config.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    if let Some(Command::Admin(admin)) = args.command {
        // No log output: what a command prints is its result.
        return runtime.block_on(hearth::admin_cli::run(&config, admin));
    }
    hearth::telemetry::init(&config.log);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen.client)
            .await
            .with_context(|| format!("binding listen.client = {}", config.listen.client))?;
        hearth::run(config, listener, hearth::shutdown_signal()).await
    })
}

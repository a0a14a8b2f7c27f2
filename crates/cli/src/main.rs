//! The `bucket-streamer` command. With no subcommand (or `serve`) it runs the
//! server with the Stage 1 flags and environment variables. `bench` measures
//! a running server, `index` writes offsets files, `convert` prepares H.265
//! material with the ffmpeg CLI, `limit` measures this machine's per-frame
//! decode and encode cost.

mod bench;
mod convert;
mod drag;
mod index;
mod limit;

use clap::{Parser, Subcommand};
use server::config::ServeArgs;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "bucket-streamer", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// Stream frames from a running server and report FPS and latency.
    Bench(bench::BenchArgs),
    /// Write the offsets JSON of a local video or s3://bucket/key.
    Index(index::IndexArgs),
    /// Convert videos to H.265 MP4 with the ffmpeg CLI.
    Convert(convert::ConvertArgs),
    /// Mint an access token (HS256 JWT) for a server run with --auth-jwt-secret.
    Token {
        #[command(flatten)]
        secret: Secret,
        /// Only video paths starting with this may be opened.
        #[arg(long)]
        prefix: Option<String>,
        /// Seconds the token is valid.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Sign a frame URL (path and query) so a page can embed it without a token.
    SignUrl {
        #[command(flatten)]
        secret: Secret,
        /// e.g. "/api/v1/frame?video=videos/a.mp4&frame=10"
        url: String,
        /// Seconds the URL is valid.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Measure one core's decode, colour conversion and JPEG encode cost per frame.
    Limit {
        /// A local video file.
        file: std::path::PathBuf,
        /// Decode at most this many frames.
        #[arg(long, default_value_t = 100_000)]
        frames: usize,
        #[arg(long, default_value_t = 80)]
        jpeg_quality: u8,
    },
}

/// The server's `--auth-jwt-secret`.
#[derive(clap::Args)]
struct Secret {
    #[arg(long = "secret", env = "AUTH_JWT_SECRET", hide_env_values = true)]
    value: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    server::allocator::tune();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bucket-streamer: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Serve(args)) => serve_command(&runtime, *args),
        None => serve_command(&runtime, cli.serve),
        Some(Command::Bench(args)) => runtime.block_on(bench_command(args)),
        Some(Command::Index(args)) => runtime.block_on(index::run(args)),
        Some(Command::Convert(args)) => convert::run(args),
        Some(Command::Limit { file, frames, jpeg_quality }) => limit_command(&file, frames, jpeg_quality),
        Some(Command::Token { secret, prefix, ttl }) => {
            let auth = server::auth::Auth::new(&secret.value);
            println!("{}", auth.token(prefix.as_deref(), server::auth::now() + ttl));
            Ok(())
        }
        Some(Command::SignUrl { secret, url, ttl }) => {
            let auth = server::auth::Auth::new(&secret.value);
            let separator = if url.contains('?') { '&' } else { '?' };
            println!("{}", auth.sign_url(&format!("{url}{separator}exp={}", server::auth::now() + ttl)));
            Ok(())
        }
    };
    // Work still on blocking threads (an index being built, a storage read)
    // must not hold the exit: waiting for it would ignore SIGTERM.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bucket-streamer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve_command(runtime: &tokio::runtime::Runtime, args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_level)?;
    runtime.block_on(server::serve(args))
}

fn limit_command(file: &std::path::Path, frames: usize, quality: u8) -> anyhow::Result<()> {
    let limit = limit::measure(file, frames, quality)?;
    println!("{}", serde_json::to_string_pretty(&limit)?);
    Ok(())
}

async fn bench_command(args: bench::BenchArgs) -> anyhow::Result<()> {
    let json = args.json;
    let summary = bench::run(args).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        summary.print();
    }
    anyhow::ensure!(summary.frames_received > 0 || summary.frames_requested == 0, "no frame was received");
    Ok(())
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    // mp4-atom reports every box it does not model (sdtp, colr, ...) as a warning.
    let directives = if level.contains("mp4_atom") { level.to_string() } else { format!("{level},mp4_atom=error") };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
    Ok(())
}

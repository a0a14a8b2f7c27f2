//! The `bucket-streamer` command. With no subcommand (or `serve`) it runs the
//! server with the Stage 1 flags and environment variables.

use clap::{Parser, Subcommand};
use server::config::ServeArgs;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "bucket-streamer",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    if let Err(error) = init_logging(&args.log_level) {
        eprintln!("bucket-streamer: {error}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bucket-streamer: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bucket-streamer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    // mp4-atom reports every box it does not model (sdtp, colr, ...) as a warning.
    let directives = if level.contains("mp4_atom") {
        level.to_string()
    } else {
        format!("{level},mp4_atom=error")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    Ok(())
}

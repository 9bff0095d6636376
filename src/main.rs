//! The `hookstream` command line: parses arguments, sets up logging and the
//! runtime, and calls into the library. Exit status 0 on success, 1 on
//! runtime failure, 2 on usage or configuration errors.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hookstream::cmd::{self, CommandError};
use hookstream::config::Config;

#[derive(Parser)]
#[command(
    name = "hookstream",
    version,
    about = "Kafka-native webhook delivery for device fleets"
)]
struct Cli {
    /// Log format (levels come from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "HOOKSTREAM_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run everything embedded: broker, receivers, events, pipeline.
    Demo {
        /// Events to generate.
        #[arg(long, default_value_t = 2000)]
        events: u64,
        /// Events per second (0 = as fast as possible).
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
    },
    /// Verify a received webhook read from standard input.
    Verify {
        /// standard | mender | openmdm | github | none
        #[arg(long)]
        scheme: String,
        /// The endpoint's signing secret.
        #[arg(long, env = "HOOKSTREAM_VERIFY_SECRET", hide_env_values = true)]
        secret: String,
        /// A received header, `NAME:VALUE` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Runtime(anyhow::anyhow!("starting the async runtime: {e}")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => {
            init_logging(cli.log_format);
            Config::load(&config)
                .map_err(CommandError::from)
                .and_then(|config| runtime()?.block_on(cmd::run::run(config)))
        }
        Command::Demo { events, rate } => {
            init_logging(cli.log_format);
            runtime().and_then(|rt| rt.block_on(hookstream::demo::run(events, rate)))
        }
        Command::Verify {
            scheme,
            secret,
            headers,
        } => {
            let mut body = Vec::new();
            match std::io::stdin().read_to_end(&mut body) {
                Err(e) => Err(CommandError::Runtime(anyhow::anyhow!(
                    "reading the body from stdin: {e}"
                ))),
                Ok(_) => match cmd::verify::verify(&scheme, &secret, &headers, &body) {
                    Ok(Ok(())) => {
                        println!("valid");
                        Ok(())
                    }
                    Ok(Err(reason)) => {
                        println!("invalid: {reason}");
                        return ExitCode::from(1);
                    }
                    Err(e) => Err(e),
                },
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookstream: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

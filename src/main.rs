//! The `hookstream` command line: parses arguments, sets up logging and the
//! runtime, and calls into the library. Exit status 0 on success, 1 on
//! runtime failure, 2 on usage or configuration errors.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// glibc's malloc contends on its arena locks between librdkafka's, tokio's
/// and hyper's threads (it topped the profiles); mimalloc does not. The
/// `override` feature makes it the C allocator too: librdkafka allocates
/// each record header on the thread that produces and frees it on the one
/// serving delivery reports, which glibc handles slowly (a deferred
/// delivery cost 1.2 µs less of CPU with it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// Measure the pipeline against its baselines (raw consume, raw HTTP).
    Bench {
        /// Scenarios: a (single), b (batch), c (fan-out), d (big index),
        /// e (dead neighbour), f (retry timing), g (100 000 endpoints,
        /// traffic to 1 000), or all.
        #[arg(long, default_value = "all")]
        scenario: String,
        /// Events per scenario.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Kafka bootstrap servers (default: the embedded broker).
        #[arg(long)]
        brokers: Option<String>,
        /// Partitions of the bench topics.
        #[arg(long, default_value_t = 16)]
        partitions: i32,
        /// Requests in flight per endpoint.
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters: list or replay them.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Manage endpoints through the management API.
    Endpoints {
        #[command(flatten)]
        client: cmd::endpoints::ClientArgs,
        #[command(subcommand)]
        command: cmd::endpoints::EndpointsCommand,
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
    /// Serve a mock broker to a parent process over stdin/stdout (used by
    /// `bench`, which keeps the broker's data out of its own memory).
    #[command(hide = true)]
    EmbeddedBroker,
}

#[derive(clap::Args)]
struct DlqArgs {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Only this endpoint.
    #[arg(long)]
    endpoint: Option<String>,
    /// Only this reason (http_400, exhausted, gone, invalid_event, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Dead at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Dead before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// At most this many.
    #[arg(long)]
    limit: Option<usize>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

impl DlqArgs {
    fn filter(&self) -> cmd::dlq::FilterArgs {
        cmd::dlq::FilterArgs {
            endpoint: self.endpoint.clone(),
            reason: self.reason.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            limit: self.limit,
        }
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters.
    List(DlqArgs),
    /// Republish dead letters to the first retry tier.
    Replay {
        #[command(flatten)]
        args: DlqArgs,
        /// Count what would be replayed; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Records per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Replay letters that were replayed before.
        #[arg(long)]
        force: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written is dropped: standard error closed
    // or broken must never panic a thread or block the service.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(hookstream::logging::stderr())
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `demo --events N --rate R` within their documented ranges (a rate of 0
/// means as fast as possible).
fn check_demo_args(events: u64, rate: f64) -> Result<(), CommandError> {
    use hookstream::config::limits::{CLI_EVENTS, CLI_RATE, outside};
    if let Some(why) = outside(events, CLI_EVENTS) {
        return Err(CommandError::Usage(format!("--events: {why}")));
    }
    if rate != 0.0
        && let Some(why) = outside(rate, CLI_RATE)
    {
        return Err(CommandError::Usage(format!("--rate: {why} (or 0)")));
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Runtime(anyhow::anyhow!("starting the async runtime: {e}")))
}

fn run_bench(
    scenario: &str,
    events: u64,
    brokers: Option<String>,
    partitions: i32,
    concurrency: u32,
    json: bool,
) -> Result<(), CommandError> {
    use hookstream::bench::{BenchOptions, Scenario, format_report, run};
    let scenarios = if scenario == "all" {
        Scenario::ALL.to_vec()
    } else {
        scenario
            .split(',')
            .map(|s| {
                Scenario::parse(s.trim()).ok_or_else(|| {
                    CommandError::Usage(format!(
                        "--scenario: `{s}` is not one of a, b, c, d, e, f, g, all"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    use hookstream::config::limits::{CLI_EVENTS, MAX_CONCURRENCY, TOPIC_PARTITIONS, outside};
    for (flag, why) in [
        ("--events", outside(events, CLI_EVENTS)),
        ("--partitions", outside(partitions, TOPIC_PARTITIONS)),
        ("--concurrency", outside(concurrency, MAX_CONCURRENCY)),
    ] {
        if let Some(why) = why {
            return Err(CommandError::Usage(format!("{flag}: {why}")));
        }
    }
    let options = BenchOptions {
        scenarios,
        events,
        brokers,
        partitions,
        concurrency,
    };
    let report = runtime()?.block_on(run(options))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| CommandError::Runtime(e.into()))?
        );
    } else {
        print!("{}", format_report(&report));
    }
    Ok(())
}

fn run_dlq(command: DlqCommand) -> Result<(), CommandError> {
    let args = match &command {
        DlqCommand::List(a) => a,
        DlqCommand::Replay { args, .. } => args,
    };
    let config = load_config(&args.config)?;
    runtime()?.block_on(async {
        match &command {
            DlqCommand::List(a) => cmd::dlq::list(config, &a.filter(), a.json).await,
            DlqCommand::Replay {
                args,
                dry_run,
                rate,
                force,
            } => {
                cmd::dlq::replay_command(config, &args.filter(), *dry_run, *rate, *force, args.json)
                    .await
            }
        }
    })
}

/// Reads the configuration file and checks it whole: plain values in
/// `config`, extraction rules and endpoints with the stages that own them.
fn load_config(path: &std::path::Path) -> Result<Config, CommandError> {
    let config = Config::load(path)?;
    hookstream::pipeline::check_config(&config, &|name| std::env::var(name).ok())?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => {
            // Before any thread starts: a SIGTERM that comes before the
            // service's handlers waits for them (see `hold_stop_signals`).
            cmd::run::hold_stop_signals();
            init_logging(cli.log_format);
            load_config(&config).and_then(|config| {
                let rt = runtime()?;
                let result = rt.block_on(cmd::run::run(config));
                // A start-up abandoned on a signal may have left a task
                // inside a blocking librdkafka call: exit without it.
                rt.shutdown_timeout(std::time::Duration::from_secs(2));
                result
            })
        }
        Command::Demo { events, rate } => {
            init_logging(cli.log_format);
            check_demo_args(events, rate)
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(hookstream::demo::run(events, rate)))
        }
        Command::Bench {
            scenario,
            events,
            brokers,
            partitions,
            concurrency,
            json,
        } => {
            init_logging(cli.log_format);
            run_bench(&scenario, events, brokers, partitions, concurrency, json)
        }
        Command::Dlq { command } => {
            init_logging(cli.log_format);
            run_dlq(command)
        }
        Command::Endpoints { client, command } => {
            init_logging(cli.log_format);
            runtime().and_then(|rt| rt.block_on(cmd::endpoints::run(&client, command)))
        }
        Command::EmbeddedBroker => {
            hookstream::kafka::embedded::serve_over_stdio().map_err(CommandError::Runtime)
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
            hookstream::logging::eprint_line(&format!("hookstream: {e}"));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

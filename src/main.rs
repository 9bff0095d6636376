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
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
    },
    /// Run everything embedded: broker, receivers, events, pipeline.
    #[cfg(feature = "dev-tools")]
    Demo {
        /// Events to generate.
        #[arg(long, default_value_t = 2000)]
        events: u64,
        /// Events per second (0 = as fast as possible).
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
    },
    /// Measure the pipeline against its baselines (raw consume, raw HTTP).
    #[cfg(feature = "dev-tools")]
    Bench(BenchArgs),
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
    /// Check a configuration file: validate it whole, resolve `${VAR}`s and
    /// `*_file` secrets, and print the effective configuration with secrets
    /// masked. Exit 2 naming the key on error.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) to standard output.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output: `hookstream man >
    /// hookstream.1`.
    Man,
    /// Serve a mock broker to a parent process over stdin/stdout (used by
    /// `bench`, which keeps the broker's data out of its own memory).
    #[command(hide = true)]
    EmbeddedBroker,
}

#[derive(clap::Args)]
struct DlqArgs {
    /// Configuration file (TOML).
    #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
    config: PathBuf,
    /// Only this endpoint.
    #[arg(long)]
    endpoint: Option<String>,
    /// Only this reason (http_400, exhausted, gone, invalid_event, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Dead at or after this time: RFC 3339 (2030-01-01T08:00:00Z,
    /// 2030-01-01T10:00:00+02:00) or a duration before now (90m, 1h30m, 2d).
    #[arg(long)]
    since: Option<String>,
    /// Dead before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Only this event type (exact, or a prefix ending in `*`).
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Only this event id.
    #[arg(long)]
    event_id: Option<String>,
    /// At most this many (the first read: partition by partition, oldest
    /// first in each).
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
            event_type: self.event_type.clone(),
            event_id: self.event_id.clone(),
            limit: self.limit,
        }
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters.
    List(DlqArgs),
    /// Print one dead letter: its headers and payload.
    Show {
        /// Configuration file (TOML).
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
        /// PARTITION/OFFSET or TOPIC/PARTITION/OFFSET, as `dlq list` and
        /// `hookstream-replay-of` name letters.
        letter: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
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
        /// Send every selected letter to this endpoint instead of its own.
        #[arg(long, value_name = "ENDPOINT")]
        to: Option<String>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written is dropped: standard error closed
    // or broken must never panic a thread or block the service. Colour
    // only on a terminal, and never with NO_COLOR set.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(hookstream::logging::stderr())
        .with_ansi(hookstream::logging::colour_on_stderr())
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(feature = "dev-tools")]
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

/// `hookstream bench`'s flags.
#[cfg(feature = "dev-tools")]
#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Scenarios: a (single), b (batch), c (fan-out), d (big index),
    /// e (dead neighbour), f (retry timing), g (activity log off vs on),
    /// h (dlq replay), i (100 000 endpoints, traffic to 1 000),
    /// j (capacity 16 → 4 → 16: fixed limits vs adaptive), k (ordered per
    /// device, one device failing), or all.
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
    /// Rounds: each measures the baselines and the scenarios anew; more
    /// than one adds each scenario's median and range across them.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Runtime(anyhow::anyhow!("starting the async runtime: {e}")))
}

#[cfg(feature = "dev-tools")]
fn run_bench(args: BenchArgs) -> Result<(), CommandError> {
    use hookstream::bench::{BenchOptions, Scenario, format_report, run};
    let scenarios = if args.scenario == "all" {
        Scenario::ALL.to_vec()
    } else {
        args.scenario
            .split(',')
            .map(|s| {
                Scenario::parse(s.trim()).ok_or_else(|| {
                    CommandError::Usage(format!(
                        "--scenario: `{s}` is not one of a, b, c, d, e, f, g, h, i, j, k, all"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    use hookstream::config::limits::{
        BENCH_EVENTS, BENCH_ROUNDS, MAX_CONCURRENCY, TOPIC_PARTITIONS, outside,
    };
    for (flag, why) in [
        ("--events", outside(args.events, BENCH_EVENTS)),
        ("--partitions", outside(args.partitions, TOPIC_PARTITIONS)),
        ("--concurrency", outside(args.concurrency, MAX_CONCURRENCY)),
        ("--rounds", outside(args.rounds, BENCH_ROUNDS)),
    ] {
        if let Some(why) = why {
            return Err(CommandError::Usage(format!("{flag}: {why}")));
        }
    }
    let options = BenchOptions {
        scenarios,
        events: args.events,
        brokers: args.brokers,
        partitions: args.partitions,
        concurrency: args.concurrency,
        rounds: args.rounds,
    };
    let report = runtime()?.block_on(run(options))?;
    if args.json {
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
    let path = match &command {
        DlqCommand::List(a) => &a.config,
        DlqCommand::Show { config, .. } => config,
        DlqCommand::Replay { args, .. } => &args.config,
    };
    let config = load_config(path)?;
    runtime()?.block_on(async {
        match &command {
            DlqCommand::List(a) => cmd::dlq::list(config, &a.filter(), a.json).await,
            DlqCommand::Show { letter, json, .. } => cmd::dlq::show(config, letter, *json).await,
            DlqCommand::Replay {
                args,
                dry_run,
                rate,
                force,
                to,
            } => {
                let replay = cmd::dlq::ReplayArgs {
                    dry_run: *dry_run,
                    rate: *rate,
                    force: *force,
                    to: to.clone(),
                    json: args.json,
                };
                cmd::dlq::replay_command(config, &args.filter(), &replay).await
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

/// `hookstream check`: the effective configuration, secrets masked.
fn check(path: &std::path::Path) -> Result<(), CommandError> {
    let config = load_config(path)?;
    let text = hookstream::config::to_toml(hookstream::config::masked(&config))
        .map_err(|e| CommandError::Runtime(anyhow::anyhow!("printing the configuration: {e}")))?;
    println!(
        "# {}: valid. The effective configuration (defaults filled in, ${{VAR}}s and *_file secrets resolved, secrets masked):\n\n{text}",
        path.display()
    );
    Ok(())
}

/// Runs the subcommand and maps its outcome to the exit status.
///
/// Long on purpose: one short arm per subcommand, read as one table.
fn main() -> ExitCode {
    hookstream::allocator::configure();
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
        #[cfg(feature = "dev-tools")]
        Command::Demo { events, rate } => {
            init_logging(cli.log_format);
            check_demo_args(events, rate)
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(hookstream::demo::run(events, rate)))
        }
        #[cfg(feature = "dev-tools")]
        Command::Bench(args) => {
            init_logging(cli.log_format);
            run_bench(args)
        }
        Command::Dlq { command } => {
            init_logging(cli.log_format);
            run_dlq(command)
        }
        Command::Endpoints { client, command } => {
            init_logging(cli.log_format);
            runtime().and_then(|rt| rt.block_on(cmd::endpoints::run(&client, command)))
        }
        Command::Check { config } => check(&config),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "hookstream",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| CommandError::Runtime(anyhow::anyhow!("writing the man page: {e}")))
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

//! `hookstream dlq list|show|replay`: dead letters for people.
//!
//! Owns the flags and what is printed; reading is `retry::dlq_scan`,
//! republishing `retry::replay`, output formats `dlq_print`.

use std::io::IsTerminal;

use super::CommandError;
use super::dlq_print::{LetterPrinter, show_json, show_text};
use crate::config::Config;
use crate::retry::dlq::{DlqFilter, parse_time_flag};
use crate::retry::dlq_scan::ScanPlan;
use crate::retry::replay::{ReplayError, ReplayOptions, replay};

/// Filter flags as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct FilterArgs {
    /// `--endpoint`
    pub endpoint: Option<String>,
    /// `--reason`
    pub reason: Option<String>,
    /// `--since` (RFC 3339 or a duration before now)
    pub since: Option<String>,
    /// `--until` (RFC 3339 or a duration before now)
    pub until: Option<String>,
    /// `--type` (exact, or a prefix ending in `*`)
    pub event_type: Option<String>,
    /// `--event-id`
    pub event_id: Option<String>,
    /// `--limit`
    pub limit: Option<usize>,
}

impl FilterArgs {
    /// The filter these flags ask for; times relative to now.
    pub fn parse(&self) -> Result<DlqFilter, CommandError> {
        let now = crate::wire::headers::now_ms();
        let time = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| parse_time_flag(flag, t, now))
                .transpose()
                .map_err(CommandError::Usage)
        };
        if self.limit == Some(0) {
            return Err(CommandError::Usage("--limit: must be at least 1".into()));
        }
        Ok(DlqFilter {
            endpoint: self.endpoint.clone(),
            reason: self.reason.clone(),
            since_ms: time("--since", &self.since)?,
            until_ms: time("--until", &self.until)?,
            event_type: self.event_type.clone(),
            event_id: self.event_id.clone(),
            limit: self.limit,
        })
    }
}

fn bootstrap(config: &Config) -> Result<String, CommandError> {
    if config.kafka.is_embedded() {
        return Err(CommandError::Usage(
            "kafka.brokers: the embedded broker lives inside `hookstream run`; dlq commands need a real cluster".into(),
        ));
    }
    Ok(config.kafka.brokers.clone())
}

fn runtime_error(e: impl Into<anyhow::Error>) -> CommandError {
    CommandError::Runtime(e.into())
}

/// `dlq list`: prints the selected dead letters as they are read, as a
/// table or a JSON array.
pub async fn list(config: Config, filter: &FilterArgs, json: bool) -> Result<(), CommandError> {
    let filter = filter.parse()?;
    let bootstrap = bootstrap(&config)?;
    let client = crate::kafka::reader_client_config(&config, &bootstrap);
    let topic = config.topics.dlq_topic();
    tokio::task::spawn_blocking(move || {
        let plan = ScanPlan::plan(&client, &topic, &filter)?;
        let mut printer = LetterPrinter::new(std::io::stdout().lock(), json);
        plan.scan_facts(&filter, |letter| printer.push(&letter))?;
        // A reader that went away (`| head`) is not a failure.
        let _ = printer.finish();
        anyhow::Ok(())
    })
    .await
    .map_err(runtime_error)?
    .map_err(CommandError::Runtime)
}

/// Parses `PARTITION/OFFSET` or `TOPIC/PARTITION/OFFSET` (the form
/// `hookstream-replay-of` and `dlq list` print).
pub fn parse_letter(text: &str, topic: &str) -> Result<(i32, i64), String> {
    let refused = || format!("`{text}` is not PARTITION/OFFSET or {topic}/PARTITION/OFFSET");
    let mut parts = text.rsplitn(3, '/');
    let offset = parts.next().and_then(|o| o.parse::<i64>().ok());
    let partition = parts.next().and_then(|p| p.parse::<i32>().ok());
    if let Some(named) = parts.next()
        && named != topic
    {
        return Err(format!("`{named}` is not the DLQ topic ({topic})"));
    }
    match (partition, offset) {
        (Some(p), Some(o)) if p >= 0 && o >= 0 => Ok((p, o)),
        _ => Err(refused()),
    }
}

/// `dlq show LETTER`: one letter's headers and payload.
pub async fn show(config: Config, letter: &str, json: bool) -> Result<(), CommandError> {
    let topic = config.topics.dlq_topic();
    let (partition, offset) =
        parse_letter(letter, &topic).map_err(|e| CommandError::Usage(format!("LETTER: {e}")))?;
    let bootstrap = bootstrap(&config)?;
    let client = crate::kafka::reader_client_config(&config, &bootstrap);
    let read_topic = topic.clone();
    let found = tokio::task::spawn_blocking(move || {
        let plan = ScanPlan::plan(&client, &read_topic, &DlqFilter::default())?;
        if !plan.ranges().iter().any(|r| r.partition == partition) {
            return Ok(None);
        }
        plan.fetch(partition, offset)
    })
    .await
    .map_err(runtime_error)?
    .map_err(CommandError::Runtime)?;
    let Some(found) = found else {
        return Err(CommandError::Runtime(anyhow::anyhow!(
            "{topic}/{partition}/{offset}: no such letter (never written, or past the topic's retention)"
        )));
    };
    if json {
        let v = show_json(&topic, &found);
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(runtime_error)?
        );
    } else {
        print!("{}", show_text(&topic, &found));
    }
    Ok(())
}

/// Flags of `dlq replay` beyond the filter.
#[derive(Debug, Clone, Default)]
pub struct ReplayArgs {
    /// `--dry-run`
    pub dry_run: bool,
    /// `--rate`
    pub rate: Option<f64>,
    /// `--force`
    pub force: bool,
    /// `--to`
    pub to: Option<String>,
    /// `--json`
    pub json: bool,
}

/// `dlq replay`: republishes the selection to the first retry tier.
pub async fn replay_command(
    config: Config,
    filter: &FilterArgs,
    args: &ReplayArgs,
) -> Result<(), CommandError> {
    if let Some(why) = args
        .rate
        .and_then(|r| crate::config::limits::outside(r, crate::config::limits::CLI_RATE))
    {
        return Err(CommandError::Usage(format!("--rate: {why}")));
    }
    if args.to.as_deref().is_some_and(str::is_empty) {
        return Err(CommandError::Usage("--to: must name an endpoint".into()));
    }
    let options = ReplayOptions {
        filter: filter.parse()?,
        dry_run: args.dry_run,
        rate: args.rate,
        force: args.force,
        to: args.to.clone(),
        progress: std::io::stderr().is_terminal() && !args.json,
    };
    let bootstrap = bootstrap(&config)?;
    let report = match replay(&config, &bootstrap, &options).await {
        Ok(r) => r,
        Err(e @ (ReplayError::AlreadyReplayed(..) | ReplayError::UnknownEndpoint(_))) => {
            return Err(CommandError::Usage(e.to_string()));
        }
        Err(ReplayError::Failed(e)) => return Err(CommandError::Runtime(e)),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(runtime_error)?);
        return Ok(());
    }
    let tier = config
        .topics
        .retry_tiers
        .first()
        .map(|t| config.topics.retry_topic(*t))
        .unwrap_or_default();
    let to = args
        .to
        .as_deref()
        .map(|id| format!(" for endpoint {id}"))
        .unwrap_or_default();
    let skipped = if report.skipped_no_endpoint > 0 {
        format!(
            "; skipped {} without an endpoint (invalid events)",
            report.skipped_no_endpoint
        )
    } else {
        String::new()
    };
    println!(
        "{} {} of {} selected dead letters to {tier}{to}{skipped}",
        if args.dry_run {
            "would replay"
        } else {
            "replayed"
        },
        report.replayed,
        report.selected,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_named_by_partition_and_offset() {
        let t = "hookstream.dlq";
        assert_eq!(parse_letter("3/1234", t), Ok((3, 1234)));
        assert_eq!(parse_letter("hookstream.dlq/3/1234", t), Ok((3, 1234)));
        assert!(
            parse_letter("other.dlq/3/1", t)
                .unwrap_err()
                .contains("not the DLQ")
        );
        for bad in ["", "3", "3/", "/3", "a/b", "-1/2", "3/-2", "3/1/2/x"] {
            assert!(parse_letter(bad, t).is_err(), "{bad}");
        }
    }

    #[test]
    fn filter_flags_are_checked() {
        let bad_time = FilterArgs {
            since: Some("yesterday".into()),
            ..FilterArgs::default()
        };
        assert!(
            matches!(bad_time.parse(), Err(CommandError::Usage(m)) if m.starts_with("--since"))
        );
        let zero = FilterArgs {
            limit: Some(0),
            ..FilterArgs::default()
        };
        assert!(matches!(zero.parse(), Err(CommandError::Usage(m)) if m.starts_with("--limit")));
    }
}

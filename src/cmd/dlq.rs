//! `hookstream dlq list|replay`: dead letters for people.

use super::CommandError;
use crate::config::Config;
use crate::retry::dlq::{DlqFilter, parse_time_flag, select, table};
use crate::retry::replay::{ReplayError, ReplayOptions, replay};

/// Filter flags as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct FilterArgs {
    /// `--endpoint`
    pub endpoint: Option<String>,
    /// `--reason`
    pub reason: Option<String>,
    /// `--since` (RFC 3339)
    pub since: Option<String>,
    /// `--until` (RFC 3339)
    pub until: Option<String>,
    /// `--limit`
    pub limit: Option<usize>,
}

impl FilterArgs {
    fn parse(&self) -> Result<DlqFilter, CommandError> {
        let time = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| parse_time_flag(flag, t))
                .transpose()
                .map_err(CommandError::Usage)
        };
        Ok(DlqFilter {
            endpoint: self.endpoint.clone(),
            reason: self.reason.clone(),
            since_ms: time("--since", &self.since)?,
            until_ms: time("--until", &self.until)?,
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

/// `dlq list`: prints the selected dead letters as a table or JSON.
pub async fn list(config: Config, filter: &FilterArgs, json: bool) -> Result<(), CommandError> {
    let filter = filter.parse()?;
    let bootstrap = bootstrap(&config)?;
    let client = crate::kafka::base_client_config(&config, &bootstrap);
    let topic = config.topics.dlq_topic();
    let letters = tokio::task::spawn_blocking(move || select(&client, &topic, &filter))
        .await
        .map_err(|e| CommandError::Runtime(e.into()))??;
    if json {
        let text =
            serde_json::to_string_pretty(&letters).map_err(|e| CommandError::Runtime(e.into()))?;
        println!("{text}");
    } else {
        print!("{}", table(&letters));
    }
    Ok(())
}

/// `dlq replay`: republishes the selection to the first retry tier.
pub async fn replay_command(
    config: Config,
    filter: &FilterArgs,
    dry_run: bool,
    rate: Option<f64>,
    force: bool,
    json: bool,
) -> Result<(), CommandError> {
    if let Some(why) =
        rate.and_then(|r| crate::config::limits::outside(r, crate::config::limits::CLI_RATE))
    {
        return Err(CommandError::Usage(format!("--rate: {why}")));
    }
    let options = ReplayOptions {
        filter: filter.parse()?,
        dry_run,
        rate,
        force,
    };
    let bootstrap = bootstrap(&config)?;
    let report = match replay(&config, &bootstrap, &options).await {
        Ok(r) => r,
        Err(e @ ReplayError::AlreadyReplayed(..)) => {
            return Err(CommandError::Usage(e.to_string()));
        }
        Err(ReplayError::Failed(e)) => return Err(CommandError::Runtime(e)),
    };
    if json {
        let text = serde_json::to_string(&report).map_err(|e| CommandError::Runtime(e.into()))?;
        println!("{text}");
    } else {
        println!(
            "{} {} of {} selected dead letters to {}{}",
            if dry_run { "would replay" } else { "replayed" },
            report.replayed,
            report.selected,
            config
                .topics
                .retry_tiers
                .first()
                .map(|t| config.topics.retry_topic(*t))
                .unwrap_or_default(),
            if report.skipped_no_endpoint > 0 {
                format!(
                    "; skipped {} without an endpoint (invalid events)",
                    report.skipped_no_endpoint
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

//! `mih dlq …`: dead letters from the command line, straight on PostgreSQL and NATS, through
//! the same functions as the admin API (so both validate, replay, delete and audit alike):
//! the dlq crate's queries to read, api's [`Replayer`] to change.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use mih_api::{Replayer, RunEnd};
use mih_dlq::store::filter::DeadLetterFilter;
use mih_dlq::store::letters::{self, DeadLetterSummary};
use mih_dlq::store::operations::{self, Operation};
use mih_shared::config::Config;
use mih_shared::names::Names;
use mih_shared::topology::{Resource, Topology};
use mih_shared::{Shutdown, connect, db};

/// Who the audit log says acted from the command line.
const CLI_ACTOR: &str = "cli";
/// How often `replay --filter` looks at an operation another process is running.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Filter keys `--filter` takes.
const KEYS: &[&str] = &[
    "service",
    "rule_id",
    "eventname",
    "source",
    "stage",
    "status",
    "q",
    "from",
    "to",
];

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        #[command(flatten)]
        filter: Box<FilterArgs>,
        /// How many to show (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Replay one dead letter, or every one matching a filter (as a tracked operation, followed
    /// to its end). A dead letter stays, `replaying`, until its replay is delivered.
    Replay {
        /// The dead letter's job id.
        #[arg(long, conflicts_with_all = ["filter", "service", "rule_id", "eventname", "source", "stage", "status", "q", "from", "to"])]
        id: Option<String>,
        #[command(flatten)]
        filter: Box<FilterArgs>,
        /// Every dead letter (required when no filter is given).
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Delete one dead letter, or every one matching a filter.
    Delete {
        /// The dead letter's job id.
        #[arg(long, conflicts_with_all = ["filter", "service", "rule_id", "eventname", "source", "stage", "status", "q", "from", "to"])]
        id: Option<String>,
        #[command(flatten)]
        filter: Box<FilterArgs>,
        /// Every dead letter (required when no filter is given).
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

/// Which dead letters: `--filter k=v,k=v` and/or one flag per field.
#[derive(Debug, Default, Args)]
pub struct FilterArgs {
    /// `key=value` pairs separated by commas (repeatable): service, rule_id, eventname,
    /// source, stage, status, q, from, to.
    #[arg(long)]
    pub filter: Vec<String>,
    /// The service the job was for.
    #[arg(long)]
    pub service: Option<String>,
    /// The rule that rendered the job.
    #[arg(long)]
    pub rule_id: Option<String>,
    /// The Moodle event's name, e.g. '\core\event\user_created'.
    #[arg(long)]
    pub eventname: Option<String>,
    /// The source (Moodle site) the event came from.
    #[arg(long)]
    pub source: Option<String>,
    /// render or delivery.
    #[arg(long)]
    pub stage: Option<String>,
    /// dead or replaying.
    #[arg(long)]
    pub status: Option<String>,
    /// Text searched in the reason and the last error (case-insensitive).
    #[arg(long, short = 'q', visible_alias = "search")]
    pub q: Option<String>,
    /// RFC 3339: dead-lettered at or after.
    #[arg(long)]
    pub from: Option<String>,
    /// RFC 3339: dead-lettered at or before.
    #[arg(long)]
    pub to: Option<String>,
}

impl FilterArgs {
    /// The filter the API would get from the same fields.
    fn to_filter(&self, all: bool) -> anyhow::Result<DeadLetterFilter> {
        let mut fields = Map::new();
        for raw in &self.filter {
            for (key, value) in split_pairs(raw)? {
                fields.insert(key, Value::String(value));
            }
        }
        for (key, value) in [
            ("service", &self.service),
            ("rule_id", &self.rule_id),
            ("eventname", &self.eventname),
            ("source", &self.source),
            ("stage", &self.stage),
            ("status", &self.status),
            ("q", &self.q),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(value) = value {
                fields.insert(key.to_owned(), Value::String(value.clone()));
            }
        }
        if all {
            fields.insert("all".into(), Value::Bool(true));
        }
        serde_json::from_value(Value::Object(fields)).map_err(|e| anyhow::anyhow!("filter: {e}"))
    }
}

/// `k=v,k=v`, where a value may itself hold commas (`q=a,b`): a comma starts a new pair only
/// when a known key and `=` follow it.
fn split_pairs(raw: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in raw.split(',') {
        let starts_pair = part
            .split_once('=')
            .is_some_and(|(key, _)| KEYS.contains(&key.trim()));
        match (starts_pair, pairs.last_mut()) {
            (true, _) => {
                let (key, value) = part.split_once('=').unwrap_or((part, ""));
                pairs.push((key.trim().to_owned(), value.to_owned()));
            }
            (false, Some((_, value))) => {
                value.push(',');
                value.push_str(part);
            }
            (false, None) => anyhow::bail!(
                "--filter `{raw}`: expected key=value pairs with keys {}",
                KEYS.join(", ")
            ),
        }
    }
    Ok(pairs)
}

pub async fn execute(config: Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let (replayer, nats) = open(&config).await?;
    let result = run(&replayer, command).await;
    nats.flush().await.context("flushing NATS")?;
    result
}

async fn run(replayer: &Replayer, command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { filter, limit } => {
            let filter = filter.to_filter(false)?.validated()?;
            if !(1..=500).contains(&limit) {
                anyhow::bail!("--limit must be between 1 and 500");
            }
            let items = letters::list(&replayer.db, &filter, None, limit).await?;
            let total = letters::count(&replayer.db, &filter).await?;
            print_table(&items, total)?;
        }
        DlqCommand::Replay { id: Some(id), .. } => {
            let replayed = replayer.replay(&id, CLI_ACTOR).await?;
            eprintln!(
                "dead letter {} replayed as job {} to {}; it is removed once that job is delivered",
                replayed.job_id, replayed.replay_job_id, replayed.service
            );
        }
        DlqCommand::Replay {
            id: None,
            filter,
            all,
        } => {
            let filter = filter.to_filter(all)?;
            let operation = replayer.start_replay(filter, CLI_ACTOR).await?;
            eprintln!(
                "replaying {} dead letter(s) as operation {}",
                operation.total, operation.id
            );
            let finished = follow(replayer, operation.id).await?;
            eprintln!(
                "operation {} {}: {} replayed, {} failed of {}{}",
                finished.id,
                finished.status,
                finished.done,
                finished.failed,
                finished.total,
                finished
                    .error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
            if finished.status != "completed" || finished.failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Delete { id: Some(id), .. } => {
            replayer.delete(&id, CLI_ACTOR).await?;
            eprintln!("dead letter {id} deleted");
        }
        DlqCommand::Delete {
            id: None,
            filter,
            all,
        } => {
            let deleted = replayer
                .delete_matching(filter.to_filter(all)?, CLI_ACTOR)
                .await?;
            eprintln!("{deleted} dead letter(s) deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the operation here, or waits for the process that runs it, until it ends.
async fn follow(replayer: &Replayer, id: sqlx::types::Uuid) -> anyhow::Result<Operation> {
    let shutdown = Shutdown::new();
    loop {
        match replayer.run_operation(id, &shutdown).await? {
            RunEnd::Ended | RunEnd::Stopped => {}
            RunEnd::Busy => tokio::time::sleep(FOLLOW_EVERY).await,
        }
        let operation = operations::get(&replayer.db, id)
            .await?
            .with_context(|| format!("dead-letter operation `{id}` does not exist"))?;
        if operation.status != "running" {
            return Ok(operation);
        }
    }
}

fn print_table(items: &[DeadLetterSummary], total: i64) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<36}  {:<20}  {:<16}  {:<8}  {:<9}  {:>3}  {:<40}  REASON",
        "JOB ID", "DEAD LETTERED (UTC)", "SERVICE", "STAGE", "STATUS", "ATT", "EVENT"
    )?;
    for item in items {
        writeln!(
            out,
            "{:<36}  {:<20}  {:<16}  {:<8}  {:<9}  {:>3}  {:<40}  {}",
            item.job_id,
            item.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
            clip(&item.service, 16),
            item.stage,
            item.status,
            item.attempts,
            clip(item.eventname.as_deref().unwrap_or("-"), 40),
            clip(&item.reason.replace('\n', " "), 80),
        )?;
    }
    writeln!(out, "{} of {total} dead letter(s)", items.len())?;
    out.flush()
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
        clipped.push('…');
        clipped
    }
}

/// What replaying needs: the database (migrated), NATS and the stream replays are queued on.
async fn open(config: &Config) -> anyhow::Result<(Replayer, async_nats::Client)> {
    let pool = connect::connect_database(&config.database).await?;
    db::migrate(&pool).await.context("migrating the database")?;
    let nats = connect::connect_nats(&config.nats, "mih-cli").await?;
    let js = async_nats::jetstream::new(nats.clone());
    let names = Names::new(config.namespace.clone());
    Topology::new(names.clone(), config)
        .ensure(&js, &[Resource::Jobs])
        .await?;
    Ok((
        Replayer::new(pool, js, names, config.streams.job_partitions()),
        nats,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_on_commas_that_start_a_known_key() {
        let pairs = split_pairs("service=sis,q=a,b=c,stage=delivery").expect("parses");
        assert_eq!(
            pairs,
            [
                ("service".to_owned(), "sis".to_owned()),
                ("q".to_owned(), "a,b=c".to_owned()),
                ("stage".to_owned(), "delivery".to_owned()),
            ]
        );
        assert!(split_pairs("nonsense").is_err());
    }

    #[test]
    fn flags_and_pairs_make_the_api_filter() {
        let args = FilterArgs {
            filter: vec!["service=sis".into()],
            q: Some("timeout".into()),
            ..Default::default()
        };
        let filter = args.to_filter(false).expect("valid");
        assert_eq!(filter.service.as_deref(), Some("sis"));
        assert_eq!(filter.q.as_deref(), Some("timeout"));
        assert!(!filter.all);
        let unknown = FilterArgs {
            filter: vec!["service=sis,colour=red".into()],
            ..Default::default()
        };
        // An unknown key is not a new pair: it stays in the service's value, which is then no
        // service name.
        let glued = unknown.to_filter(false).expect("parses");
        assert_eq!(glued.service.as_deref(), Some("sis,colour=red"));
        assert!(glued.validated().is_err());
    }
}

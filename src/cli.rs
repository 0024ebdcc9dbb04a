//! The command line: parse, load config, dispatch. Every decision lives in the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use mih_shared::ServiceName;
use mih_shared::config::{Config, ConfigError, ConfigLoader};

#[derive(Debug, Parser)]
#[command(
    name = "mih",
    version,
    about = "mih — outbound integration hub for Moodle",
    long_about = "mih receives Moodle events, matches them to rules and delivers them to external \
                  services over REST, AMQP and SOAP, with retries, circuit breakers and a dead \
                  letter queue.\n\nConfiguration: embedded defaults → --config file → MIH_* \
                  environment → flags. `mih config defaults` prints every setting."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file, layered over the embedded defaults.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "MIH_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// NATS server URL (setting `nats.url`).
    #[arg(long, global = true, value_name = "URL")]
    pub nats_url: Option<String>,
    /// PostgreSQL URL (setting `database.url`).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Namespace of streams, subjects and buckets (setting `namespace`).
    #[arg(long, global = true, value_name = "NAME")]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run services: all of them by default, or those named with --service.
    Run(RunArgs),
    /// Apply pending PostgreSQL migrations and exit.
    Migrate,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage admin API tokens directly in the database (bootstrap the first admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Secrets at rest: generate a key, re-encrypt after rotating it.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Print the admin API's OpenAPI 3.1 document.
    Openapi,
    /// Circuit breakers of services.
    #[command(subcommand)]
    Circuit(CircuitCommand),
    /// Dead letters: list, replay, delete.
    #[command(subcommand)]
    Dlq(crate::dlq::DlqCommand),
    /// Empty the delivery log, its rollups and the dead letters in PostgreSQL and rebuild them
    /// from the RESULTS and DLQ streams.
    RebuildProjections,
}

#[derive(Debug, Subcommand)]
pub enum CircuitCommand {
    /// Close a service's circuit now: its held jobs are delivered without waiting for the
    /// cooldown (every dispatcher replica resumes).
    Reset {
        /// The service's name.
        service: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token and print it (it is shown only once).
    Create {
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// What the token is for.
        #[arg(long, default_value = "created with mih token create")]
        label: String,
        /// Lifetime, for example 90days; default: no expiry.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<humantime::Duration>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Print a new random key for `secret_key` (MIH_SECRET_KEY).
    GenerateKey,
    /// Re-seal every stored secret with the current `secret_key` (after a rotation, with the
    /// old key in `secret_keys_previous`), and update the live config.
    Reencrypt,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Service to run (repeat or separate with commas): ingest, matcher, dispatcher, dlq, api.
    #[arg(
        long = "service",
        short = 's',
        env = "MIH_SERVICES",
        value_delimiter = ',',
        value_name = "SERVICE"
    )]
    pub services: Vec<ServiceName>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted.
    Dump,
    /// Print the embedded defaults, every setting commented.
    Defaults,
}

impl GlobalArgs {
    /// Loads the configuration with every layer, flags last.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut loader = ConfigLoader::new();
        if let Some(path) = &self.config {
            loader = loader.file(path)?;
        }
        loader = loader.env();
        if let Some(url) = &self.nats_url {
            loader = loader.set("nats.url", url);
        }
        if let Some(url) = &self.database_url {
            loader = loader.set("database.url", url);
        }
        if let Some(namespace) = &self.namespace {
            loader = loader.set("namespace", namespace);
        }
        loader.load()
    }
}

impl RunArgs {
    /// The services to run, each once, in pipeline order; all of them when none is named.
    pub fn selected(&self) -> Vec<ServiceName> {
        if self.services.is_empty() {
            return ServiceName::ALL.to_vec();
        }
        let mut services = self.services.clone();
        services.sort();
        services.dedup();
        services
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn services_may_be_repeated_or_comma_separated() {
        let cli = Cli::try_parse_from(["mih", "run", "-s", "api,ingest", "--service", "ingest"])
            .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(args.selected(), [ServiceName::Ingest, ServiceName::Api]);
        let all = Cli::try_parse_from(["mih", "run"]).expect("parses");
        let Command::Run(args) = all.command else {
            panic!("expected run")
        };
        assert_eq!(args.selected(), ServiceName::ALL);
        assert!(Cli::try_parse_from(["mih", "run", "-s", "bogus"]).is_err());
    }
}

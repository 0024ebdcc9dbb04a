//! What each subcommand does.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use mih_shared::config::{Config, DEFAULTS_TOML};
use mih_shared::{connect, crypto, db, shutdown, telemetry};

use crate::admin;
use crate::cli::{
    CircuitCommand, Cli, Command, ConfigCommand, RunArgs, SecretsCommand, TokenCommand,
};
use crate::supervisor;

/// Runs the parsed command line; errors are printed by the caller.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config(ConfigCommand::Defaults) => {
            print(DEFAULTS_TOML)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Dump) => {
            let config = cli.global.load_config()?;
            print(&config.dump()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = cli.global.load_config()?;
            let _telemetry = telemetry::init("mih", config.namespace.as_str(), &config.telemetry)?;
            let pool = connect::connect_database(&config.database).await?;
            let count = db::migrate(&pool).await?;
            tracing::info!(migrations = count, url = %config.database.url, "database schema up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let config = cli.global.load_config()?;
            run(config, &args).await
        }
        Command::Openapi => {
            print(&mih_api::openapi_json())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Secrets(SecretsCommand::GenerateKey) => {
            print(&crypto::generate_key()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Secrets(SecretsCommand::Reencrypt) => {
            let config = cli.global.load_config()?;
            let _telemetry = telemetry::init("mih", config.namespace.as_str(), &config.telemetry)?;
            let moved = admin::reencrypt(config).await?;
            tracing::info!(moved, "secrets re-encrypted with the current key");
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(command) => {
            let config = cli.global.load_config()?;
            let _telemetry = telemetry::init("mih", config.namespace.as_str(), &config.telemetry)?;
            crate::dlq::execute(config, command).await
        }
        Command::RebuildProjections => {
            let config = cli.global.load_config()?;
            let _telemetry = telemetry::init("mih", config.namespace.as_str(), &config.telemetry)?;
            let rebuilt = crate::rebuild::run(&config).await?;
            tracing::info!(
                deliveries = rebuilt.deliveries,
                dead_letters = rebuilt.dead_letters,
                resolved = rebuilt.resolved,
                circuit_changes = rebuilt.circuit_changes,
                inbound = rebuilt.inbound,
                "projections rebuilt from the streams"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Circuit(CircuitCommand::Reset { service }) => {
            let config = cli.global.load_config()?;
            let circuit = admin::reset_circuit(&config, &service).await?;
            eprintln!("circuit of {service} is {}", circuit.state.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Create {
            role,
            label,
            expires_in,
        }) => {
            let config = cli.global.load_config()?;
            let role = role
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
            let issued =
                admin::create_token(&config, role, &label, expires_in.map(Into::into)).await?;
            eprintln!(
                "issued {} token {} ({}); it is shown once:",
                issued.view.role.as_str(),
                issued.view.id,
                issued.view.label
            );
            print(&issued.token)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(config: Config, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let services = args.selected();
    let process_name = match services.as_slice() {
        [one] => format!("mih-{one}"),
        _ => "mih".to_owned(),
    };
    let _telemetry = telemetry::init(&process_name, config.namespace.as_str(), &config.telemetry)?;
    let names: Vec<String> = services.iter().map(ToString::to_string).collect();
    tracing::info!(services = %names.join(","), namespace = %config.namespace, "starting");
    let hub = supervisor::start(Arc::new(config), &services).await?;
    for (service, addr) in hub.addrs() {
        tracing::info!(%service, %addr, "listening");
    }
    let stop = async {
        match shutdown::wait_for_signal().await {
            Ok(signal) => tracing::info!(?signal, "shutdown requested; draining"),
            Err(error) => {
                tracing::error!(%error, "cannot listen for signals; running until a service stops");
                std::future::pending::<()>().await;
            }
        }
    };
    hub.run_until(stop).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

//! Layering: embedded defaults → TOML file → `MIH_*` environment → explicit overrides (flags).

use std::fmt;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::util::nest;
use figment::value::{Dict, Map as FigmentMap, Uncased, UncasedStr, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Config, DEFAULTS_TOML};

/// Top-level tables; `MIH_<TABLE>_<KEY>` addresses `<table>.<key>`.
const SECTIONS: &[&str] = &[
    "nats",
    "database",
    "streams",
    "telemetry",
    "shutdown",
    "http",
    "ingest",
    "matcher",
    "dispatcher",
    "dlq",
    "api",
    "retention",
    "sources",
];

/// `MIH_*` variables that are not configuration keys: read by the command line (`MIH_CONFIG`,
/// `MIH_SERVICES`) or by the test harness (`MIH_TEST_*`).
const NOT_CONFIG: &[&str] = &["config", "services"];
const NOT_CONFIG_PREFIX: &str = "test_";

/// Builds a [`Config`] from its layers.
#[derive(Debug)]
pub struct ConfigLoader {
    figment: Figment,
}

impl Default for ConfigLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigLoader {
    /// Starts from the embedded defaults.
    pub fn new() -> Self {
        Self {
            figment: Figment::from(Toml::string(DEFAULTS_TOML)),
        }
    }

    /// Merges a TOML file; it must exist.
    pub fn file(mut self, path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::MissingFile(path.display().to_string()));
        }
        self.figment = self.figment.merge(Toml::file_exact(path));
        Ok(self)
    }

    /// Merges TOML text (tests, generated configs).
    pub fn toml(mut self, text: &str) -> Self {
        self.figment = self.figment.merge(Toml::string(text));
        self
    }

    /// Merges the `MIH_*` environment variables.
    pub fn env(mut self) -> Self {
        self.figment = self.figment.merge(MihEnv(
            Env::prefixed("MIH_")
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    !NOT_CONFIG.contains(&key.as_str()) && !key.starts_with(NOT_CONFIG_PREFIX)
                })
                .map(env_key_to_path),
        ));
        self
    }

    /// Sets one key (dotted path) to a value; later calls win. Used for command-line flags.
    pub fn set<T: serde::Serialize>(mut self, key: &str, value: T) -> Self {
        self.figment = self.figment.merge(Serialized::default(key, value));
        self
    }

    /// Extracts and validates the configuration.
    pub fn load(self) -> Result<Config, ConfigError> {
        let config: Config = self.figment.extract().map_err(ConfigError::from_figment)?;
        let problems = super::validate::validate(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// The `MIH_*` variables as a figment provider. Unlike figment's own `Env`, values are not
/// guessed into floats: a password `1.50` or `007` must reach the setting unchanged. Only
/// lists/tables (`[…]`, `{…}`), `true`/`false` and integers whose text round-trips exactly are
/// typed; string settings accept those back as text (see [`super::lenient`]).
struct MihEnv(Env);

impl Provider for MihEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named("`MIH_` environment variable(s)")
            .interpolater(|_: &Profile, keys: &[&str]| env_var_for(&keys.join(".")))
    }

    fn data(&self) -> Result<FigmentMap<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in self.0.iter() {
            if let Value::Dict(_, nested) = nest(key.as_str(), parse_env_value(&raw)) {
                merge_dicts(&mut dict, nested);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn parse_env_value(raw: &str) -> Value {
    let trimmed = raw.trim();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let Ok(value) = trimmed.parse::<Value>();
        if !matches!(value, Value::String(..)) {
            return value;
        }
    }
    match trimmed {
        "true" => return Value::from(true),
        "false" => return Value::from(false),
        _ => {}
    }
    match raw.parse::<i64>() {
        Ok(number) if number.to_string() == raw => Value::from(number),
        _ => Value::from(raw.to_owned()),
    }
}

fn merge_dicts(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, incoming)) => {
                merge_dicts(existing, incoming)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// `nats_url` → `nats.url`; `sources__moodle__signing_secrets` → `sources.moodle.signing_secrets`.
fn env_key_to_path(key: &UncasedStr) -> Uncased<'_> {
    let key = key.as_str().to_ascii_lowercase();
    if key.contains("__") {
        return key.replace("__", ".").into();
    }
    for section in SECTIONS {
        if let Some(rest) = key
            .strip_prefix(section)
            .and_then(|rest| rest.strip_prefix('_'))
        {
            return format!("{section}.{rest}").into();
        }
    }
    key.into()
}

/// The environment variable that sets a dotted setting (`ingest.listen` → `MIH_INGEST_LISTEN`).
pub fn env_var_for(setting: &str) -> String {
    let top = setting.split('.').next().unwrap_or(setting);
    let joiner = if SECTIONS.contains(&top) && setting.matches('.').count() == 1 {
        "_"
    } else {
        "__"
    };
    format!("MIH_{}", setting.replace('.', joiner).to_ascii_uppercase())
}

/// One setting that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub setting: String,
    pub message: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` ({}): {}",
            self.setting,
            env_var_for(&self.setting),
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file `{0}` does not exist")]
    MissingFile(String),
    #[error("configuration could not be read:\n{}", bullet_list(.0))]
    Unreadable(Vec<String>),
    #[error("configuration is invalid:\n{}", bullet_list(.0))]
    Invalid(Vec<SettingError>),
}

impl ConfigError {
    fn from_figment(error: figment::Error) -> Self {
        let problems = error
            .into_iter()
            .map(|e| {
                let setting = e.path.join(".");
                let origin = e
                    .metadata
                    .as_ref()
                    .map(|m| format!(" from {}", m.name))
                    .unwrap_or_default();
                if setting.is_empty() {
                    format!("{}{origin}", e.kind)
                } else {
                    format!(
                        "`{setting}` ({}){origin}: {}",
                        env_var_for(&setting),
                        e.kind
                    )
                }
            })
            .collect();
        ConfigError::Unreadable(problems)
    }
}

fn bullet_list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|item| format!("  - {item}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
// figment's `Jail` closures return its large error type; that is its API, not our choice.
#[allow(clippy::result_large_err)]
mod tests {
    use std::time::Duration;

    use figment::Jail;

    use super::*;

    #[test]
    fn defaults_load_and_are_valid() {
        let config = ConfigLoader::new().load().expect("defaults are valid");
        assert_eq!(config.namespace.as_str(), "mih");
        assert_eq!(config.ingest.max_batch_events, 1000);
        assert_eq!(
            config.streams.events_max_age,
            Duration::from_secs(7 * 24 * 3600)
        );
        assert!(config.sources.is_empty());
    }

    #[test]
    fn every_default_table_is_a_known_section() {
        let defaults: toml::Table = toml::from_str(DEFAULTS_TOML).expect("defaults parse");
        for (key, value) in defaults {
            if value.is_table() {
                assert!(
                    SECTIONS.contains(&key.as_str()),
                    "section `{key}` missing from SECTIONS"
                );
            }
        }
    }

    #[test]
    fn trace_settings_come_from_the_environment() {
        Jail::expect_with(|jail| {
            // The environment layer keeps `0.25` as text (a password `1.50` must stay text).
            jail.set_env("MIH_TELEMETRY_TRACE_SAMPLE_RATIO", "0.25");
            jail.set_env("MIH_TELEMETRY_OTLP_ENDPOINT", "http://otel:4318/");
            let config = ConfigLoader::new()
                .env()
                .load()
                .map_err(|e| e.to_string())?;
            assert_eq!(config.telemetry.trace_sample_ratio, 0.25);
            assert_eq!(config.telemetry.otlp_endpoint(), Some("http://otel:4318/"));
            Ok(())
        });
    }

    #[test]
    fn layers_apply_in_order_file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "mih.toml",
                "namespace = \"fromfile\"\n[ingest]\nmax_batch_events = 10\nmax_body_bytes = 2000\nmax_event_bytes = 1000\n",
            )?;
            jail.set_env("MIH_INGEST_MAX_BATCH_EVENTS", "20");
            jail.set_env("MIH_NATS_URL", "nats://env:4222");
            jail.set_env("MIH_NATS_PASSWORD", "00123");
            jail.set_env("MIH_NATS_USER", "1.50");
            jail.set_env("MIH_CONFIG", "ignored-by-the-loader");
            jail.set_env("MIH_TEST_DATABASE_URL", "ignored-too");
            let config = ConfigLoader::new()
                .file(Path::new("mih.toml"))
                .map_err(|e| e.to_string())?
                .env()
                .set("nats.url", "nats://flag:4222")
                .load()
                .map_err(|e| e.to_string())?;
            assert_eq!(config.namespace.as_str(), "fromfile");
            assert_eq!(config.ingest.max_body_bytes, 2000);
            assert_eq!(config.ingest.max_batch_events, 20);
            assert_eq!(config.nats.url.expose(), "nats://flag:4222");
            let password = config.nats.password.as_ref().map(|p| p.expose().to_owned());
            assert_eq!(password.as_deref(), Some("00123"));
            assert_eq!(config.nats.user.as_deref(), Some("1.50"));
            Ok(())
        });
    }

    #[test]
    fn numeric_looking_strings_stay_strings() {
        Jail::expect_with(|jail| {
            jail.set_env("MIH_NATS_PASSWORD", "12345");
            jail.set_env("MIH_NATS_USER", "true");
            jail.set_env("MIH_TELEMETRY_LOG_LEVEL", "1");
            jail.set_env("MIH_INGEST_MAX_BATCH_EVENTS", "20");
            let config = ConfigLoader::new().env().load();
            // log_level "1" is not a valid filter name, but it must arrive as text.
            let config = config.map_err(|e| e.to_string())?;
            let password = config.nats.password.as_ref().map(|p| p.expose().to_owned());
            assert_eq!(password.as_deref(), Some("12345"));
            assert_eq!(config.nats.user.as_deref(), Some("true"));
            assert_eq!(config.telemetry.log_level, "1");
            assert_eq!(config.ingest.max_batch_events, 20);
            Ok(())
        });
    }

    #[test]
    fn http_limits_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("MIH_HTTP_IDLE_TIMEOUT", "90s");
            jail.set_env("MIH_HTTP_MAX_CONNECTIONS", "64");
            let config = ConfigLoader::new()
                .env()
                .load()
                .map_err(|e| e.to_string())?;
            assert_eq!(config.http.idle_timeout, Duration::from_secs(90));
            assert_eq!(config.http.max_connections, 64);
            assert_eq!(config.http.header_read_timeout, Duration::from_secs(10));
            Ok(())
        });
        assert_eq!(
            env_var_for("http.header_read_timeout"),
            "MIH_HTTP_HEADER_READ_TIMEOUT"
        );
    }

    #[test]
    fn sources_can_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "MIH_SOURCES__MOODLE__SIGNING_SECRETS",
                "[\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]",
            );
            jail.set_env("MIH_SOURCES__MOODLE__NAME", "Moodle");
            let config = ConfigLoader::new()
                .env()
                .load()
                .map_err(|e| e.to_string())?;
            let source = config
                .sources
                .values()
                .next()
                .ok_or("the source should be there")?;
            assert_eq!(source.name.as_deref(), Some("Moodle"));
            assert_eq!(source.signing_secrets.len(), 1);
            assert!(source.enabled);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused_naming_key_and_origin() {
        Jail::expect_with(|jail| {
            jail.set_env("MIH_INGEST_MAX_BATCH_EVENT", "5");
            let err = ConfigLoader::new().env().load().expect_err("unknown key");
            let text = err.to_string();
            assert!(text.contains("max_batch_event"), "{text}");
            assert!(text.contains("MIH_INGEST_MAX_BATCH_EVENT"), "{text}");
            Ok(())
        });
        let err = ConfigLoader::new()
            .toml("[nats]\nurll = \"x\"\n")
            .load()
            .expect_err("unknown key");
        assert!(err.to_string().contains("urll"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_setting() {
        let err = ConfigLoader::new()
            .toml("[ingest]\nmax_batch_events = \"many\"\n")
            .load()
            .expect_err("wrong type");
        let text = err.to_string();
        assert!(text.contains("ingest.max_batch_events"), "{text}");
    }

    #[test]
    fn env_var_names_follow_the_mapping() {
        assert_eq!(env_var_for("nats.url"), "MIH_NATS_URL");
        assert_eq!(env_var_for("namespace"), "MIH_NAMESPACE");
        assert_eq!(
            env_var_for("sources.moodle.signing_secrets"),
            "MIH_SOURCES__MOODLE__SIGNING_SECRETS"
        );
        for key in [
            "nats_url",
            "namespace",
            "sources__a__name",
            "ingest_max_body_bytes",
        ] {
            let path = env_key_to_path(key.into());
            assert_eq!(
                env_var_for(path.as_str()),
                format!("MIH_{}", key.to_uppercase())
            );
        }
    }

    #[test]
    fn dump_redacts_every_secret() {
        let config = ConfigLoader::new()
            .toml(
                r#"
                secret_key = "q2Vp2Nv5rPfBk0pO2Kq7pZbJm0Ck4YqZp0dJmQ8v3Xo="
                bootstrap_admin_token = "bootstrap-admin-token-value"
                [nats]
                url = "nats://user:natspass@127.0.0.1:4222"
                token = "natstoken"
                [database]
                url = "postgres://mih:dbpass@127.0.0.1/mih"
                [sources.moodle]
                signing_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
                bearer_tokens = ["a-long-bearer-token-value"]
                "#,
            )
            .load()
            .expect("valid");
        let dump = config.dump().expect("dumps");
        for secret in [
            "q2Vp2Nv5rPfBk0pO2Kq7pZbJm0Ck4YqZp0dJmQ8v3Xo=",
            "bootstrap-admin-token-value",
            "natspass",
            "natstoken",
            "dbpass",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "a-long-bearer-token-value",
        ] {
            assert!(!dump.contains(secret), "`{secret}` leaked into:\n{dump}");
        }
        assert!(dump.contains(super::super::REDACTED));
        let reparsed: toml::Table = toml::from_str(&dump).expect("dump is TOML");
        assert!(reparsed.contains_key("ingest"));
    }
}

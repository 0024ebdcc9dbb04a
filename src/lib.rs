//! The `mih` binary's library: the command line and the supervisor that runs services in one
//! process. System tests and benchmarks start hubs through [`supervisor::start`].

pub mod admin;
pub mod cli;
pub mod commands;
pub mod dlq;
pub mod rebuild;
pub mod supervisor;

pub use supervisor::{Hub, HubError, start};

#[cfg(test)]
mod readme {
    use mih_shared::config::DEFAULTS_TOML;

    /// Every key of the defaults file, commented-out ones included, as `section.key`.
    fn documented_keys() -> Vec<String> {
        let mut section = String::new();
        let mut keys = Vec::new();
        for line in DEFAULTS_TOML.lines() {
            let line = line.trim();
            let body = line.trim_start_matches('#').trim();
            if body.starts_with('[')
                && body.ends_with(']')
                && (line == body || body.starts_with("[sources."))
            {
                section = body.trim_matches(['[', ']']).to_owned();
                if section.starts_with("sources.") {
                    section = "sources.<id>".to_owned();
                }
                continue;
            }
            let Some((key, _)) = body.split_once(" = ") else {
                continue;
            };
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.push(if section.is_empty() {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                });
            }
        }
        keys
    }

    #[test]
    fn readme_documents_every_setting() {
        let readme = include_str!("../README.md");
        let keys = documented_keys();
        for expected in [
            "namespace",
            "nats.user",
            "ingest.listen",
            "sources.<id>.bearer_tokens",
        ] {
            assert!(
                keys.iter().any(|k| k == expected),
                "{expected} not parsed from {keys:?}"
            );
        }
        let missing: Vec<_> = keys
            .iter()
            .filter(|k| !readme.contains(&format!("`{k}`")))
            .collect();
        assert!(missing.is_empty(), "README lacks settings: {missing:?}");
    }
}

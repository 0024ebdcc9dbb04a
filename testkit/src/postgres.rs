//! A fresh PostgreSQL database per test, dropped when the test ends.

use anyhow::Context;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Override with `MIH_TEST_DATABASE_URL` (any database on the server; used to create others).
const ADMIN_URL_ENV: &str = "MIH_TEST_DATABASE_URL";
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let admin_url =
            std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let name = format!("mih_{}", crate::unique_namespace());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {admin_url} (run scripts/dev-deps, or set {ADMIN_URL_ENV})"))?;
        // `name` is ours: `mih_t` and hex digits.
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => anyhow::bail!("{ADMIN_URL_ENV} must end with /<database>"),
        };
        Ok(Self {
            admin_url,
            name,
            url,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; use a thread of our own.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .ok()
            })
        });
        let _ = dropper.join();
    }
}

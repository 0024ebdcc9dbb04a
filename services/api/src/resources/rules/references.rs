//! What rules ask of the sources and services they name: a source is not deleted while rules
//! name it; a service takes its rules along only when told to (`cascade`), and keeps its kind
//! while rules target it. Written here, beside the rules, so that sources and services need not
//! know about rules.

use sqlx::PgConnection;

use super::store::{self, RuleRow};
use crate::error::{ApiFailure, ApiResult};
use crate::resources::config_row::Referenced;
use crate::resources::services::ServiceRow;
use crate::resources::sources::SourceRow;

impl Referenced for SourceRow {
    type Referrer = RuleRow;

    async fn referrers(
        db: &mut PgConnection,
        row: &Self,
        _cascade: bool,
    ) -> ApiResult<Vec<RuleRow>> {
        let users = store::naming_source(db, &row.id).await?;
        if !users.is_empty() {
            return Err(ApiFailure::Conflict(format!(
                "rules still name source `{}`: {}; change them first",
                row.id,
                users.join(", ")
            )));
        }
        Ok(Vec::new())
    }

    async fn check_change(_: &mut PgConnection, _: &Self, _: &Self) -> ApiResult<()> {
        Ok(())
    }
}

impl Referenced for ServiceRow {
    type Referrer = RuleRow;

    async fn referrers(
        db: &mut PgConnection,
        row: &Self,
        cascade: bool,
    ) -> ApiResult<Vec<RuleRow>> {
        let rules = store::for_service(db, &row.name).await?;
        if !rules.is_empty() && !cascade {
            let names: Vec<&str> = rules.iter().take(10).map(|r| r.name.as_str()).collect();
            return Err(ApiFailure::Conflict(format!(
                "{} rules target service `{}` ({}); delete them first or pass cascade=true",
                rules.len(),
                row.name,
                names.join(", ")
            )));
        }
        Ok(rules)
    }

    async fn check_change(db: &mut PgConnection, before: &Self, after: &Self) -> ApiResult<()> {
        if after.kind == before.kind {
            return Ok(());
        }
        let rules = store::count_for_service(db, &before.name).await?;
        if rules > 0 {
            return Err(ApiFailure::invalid(
                "transport.kind",
                format!(
                    "{rules} rules target this service as {}; change or delete them first",
                    before.kind
                ),
            ));
        }
        Ok(())
    }
}

/// Nothing names a rule.
impl Referenced for RuleRow {
    type Referrer = RuleRow;

    async fn referrers(_: &mut PgConnection, _: &Self, _: bool) -> ApiResult<Vec<RuleRow>> {
        Ok(Vec::new())
    }

    async fn check_change(_: &mut PgConnection, _: &Self, _: &Self) -> ApiResult<()> {
        Ok(())
    }
}

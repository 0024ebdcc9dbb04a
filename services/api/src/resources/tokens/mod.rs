//! Admin API tokens. The token itself is shown once, when issued; only its SHA-256 is stored.
//! Admin role only. `input` checks what a client writes, `store` is the table, `view` what the
//! API shows, `handlers` the HTTP operations; issuing is here, since `mih token create` and the
//! bootstrap token issue tokens too.

pub(crate) mod handlers;
pub(crate) mod input;
mod store;
mod view;

pub use view::IssuedToken;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use mih_shared::crypto::random_hex;

use crate::audit;
use crate::auth::{Role, TOKEN_PREFIX, hash_token};
use crate::error::{ApiFailure, ApiResult};
use crate::resources::crud::Resource;
use input::TokenFilter;
use store::{NewToken, TokenRow};
use view::TokenView;

/// Characters of the token kept in clear to recognise it (`mih_` + 6).
const SHOWN_PREFIX: usize = 10;

impl Resource for TokenRow {
    const KIND: &'static str = "token";
    const READ_ROLE: Role = Role::Admin;
    const WRITE_ROLE: Role = Role::Admin;
    type View = TokenView;
    type Filter = TokenFilter;

    fn id(&self) -> String {
        self.id.to_string()
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn view(&self) -> ApiResult<TokenView> {
        TokenView::try_from(self)
    }

    /// A malformed id names no token.
    async fn load(db: &mut PgConnection, id: &str, for_update: bool) -> ApiResult<Option<Self>> {
        match Uuid::parse_str(id) {
            Ok(uuid) => Ok(store::load(db, uuid, for_update).await?),
            Err(_) => Ok(None),
        }
    }

    async fn page(
        db: &PgPool,
        filter: &TokenFilter,
        after: Option<&str>,
        limit: i64,
    ) -> ApiResult<Vec<Self>> {
        let after =
            match after {
                Some(raw) => Some(Uuid::parse_str(raw).map_err(|_| {
                    ApiFailure::invalid("cursor", "is not a cursor this API issued")
                })?),
                None => None,
            };
        let role = filter.role.map(Role::as_str);
        Ok(store::page(db, after, role, filter.revoked, limit).await?)
    }
}

/// Issues a token; used by the API, `mih token create` and the bootstrap token.
pub async fn issue(
    db: &PgPool,
    label: &str,
    role: Role,
    expires_at: Option<DateTime<Utc>>,
    actor: &str,
    given: Option<&str>,
) -> ApiResult<IssuedToken> {
    input::check_new(label, expires_at)?;
    let token = match given {
        Some(token) => token.to_owned(),
        None => format!(
            "{TOKEN_PREFIX}{}",
            random_hex(24).map_err(ApiFailure::Crypto)?
        ),
    };
    let prefix: String = token.chars().take(SHOWN_PREFIX).collect();
    let mut tx = db.begin().await?;
    let row = store::insert(
        &mut tx,
        &NewToken {
            label,
            role: role.as_str(),
            token_hash: &hash_token(&token),
            token_prefix: &prefix,
            created_by: actor,
            expires_at,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        actor,
        "create",
        TokenRow::KIND,
        &row.id.to_string(),
        None,
        Some(row.view_json()),
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedToken {
        view: row.view()?,
        token,
    })
}

/// Makes sure the configured bootstrap token exists as an admin token; true if it was created.
pub async fn ensure_bootstrap(db: &PgPool, token: &str) -> ApiResult<bool> {
    if store::exists_with_hash(db, &hash_token(token)).await? {
        return Ok(false);
    }
    issue(
        db,
        "bootstrap (bootstrap_admin_token)",
        Role::Admin,
        None,
        "system",
        Some(token),
    )
    .await?;
    Ok(true)
}

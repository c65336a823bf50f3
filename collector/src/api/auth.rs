//! Who is calling: the bearer token, looked up by its hash.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{blocking, ApiError, AppState};
use crate::store::{Role, TokenRow};
use crate::token;

/// An authenticated caller (a known, unrevoked token).
pub struct Caller(pub TokenRow);

impl Caller {
    /// Refuses agent tokens: reading is for read and admin tokens.
    pub fn require_reader(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Read | Role::Admin => Ok(()),
            Role::Agent => Err(ApiError::Forbidden(
                "agent tokens cannot read; use a read token (portwatch-collector token create --role read --name NAME)"
                    .to_owned(),
            )),
        }
    }
}

impl Caller {
    /// Refuses all but admin tokens: changing baselines and alerts is for admins.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Admin => Ok(()),
            role => Err(ApiError::Forbidden(format!(
                "a {} token cannot change baselines or alerts; use an admin token \
                 (portwatch-collector token create --role admin --name NAME)",
                role.as_str()
            ))),
        }
    }

    /// The token's name, recorded as who made a change.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("no credentials: send `Authorization: Bearer <token>`".to_owned()))?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("malformed Authorization header: use `Bearer <token>`".to_owned()))?;
        let hash = token::hash(secret);
        let store = state.store.clone();
        let found = blocking(move || store.token_by_hash(&hash)).await?;
        match found {
            Some(row) if row.revoked_at.is_none() => Ok(Caller(row)),
            Some(_) => Err(ApiError::Unauthorized(
                "this token was revoked; ask for a new one".to_owned(),
            )),
            None => Err(ApiError::Unauthorized("unknown token".to_owned())),
        }
    }
}

//! Leases in PostgreSQL: one row per lease, taken or renewed by one upsert,
//! so of collectors racing for a free lease one gets it (the row's lock
//! orders them; the others see it held).

use jiff::Timestamp;

use super::{pg, PostgresStore};
use crate::store::{Leases, StoreError};

impl Leases for PostgresStore {
    fn hold_lease(&self, name: &str, holder: &str, now: Timestamp, until: Timestamp) -> Result<bool, StoreError> {
        self.block(async |inner| {
            let client = inner.client().await?;
            let row = client
                .query_opt(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                     WHERE leases.holder = excluded.holder OR leases.expires_at <= $4
                     RETURNING holder",
                    &[&name, &holder, &until.as_millisecond(), &now.as_millisecond()],
                )
                .await
                .map_err(pg)?;
            Ok(row.is_some())
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.block(async |inner| {
            let client = inner.client().await?;
            client
                .execute("DELETE FROM leases WHERE name = $1 AND holder = $2", &[&name, &holder])
                .await
                .map(drop)
                .map_err(pg)
        })
    }

    fn live_holders(&self, now: Timestamp) -> Result<Vec<String>, StoreError> {
        self.block(async |inner| {
            let client = inner.client().await?;
            let rows = client
                .query(
                    "SELECT DISTINCT holder FROM leases WHERE expires_at > $1 ORDER BY holder",
                    &[&now.as_millisecond()],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

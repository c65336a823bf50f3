//! Probe verdicts in SQLite: one row per listener place of a host, replaced
//! whole by each probe of the host.

use rusqlite::params;

use super::{db, SqliteStore, Synchronous};
use crate::store::stored::{from_bits, probe_verdict, proto_code, to_bits};
use crate::store::{Probes, StoreError};
use portwatch_model::ProbeVerdict;

impl Probes for SqliteStore {
    fn replace_probe_verdicts(&self, host: &str, verdicts: &[ProbeVerdict]) -> Result<(), StoreError> {
        self.transact(Synchronous::Normal, |tx| {
            tx.execute("DELETE FROM probe_verdicts WHERE host = ?1", [host])
                .map_err(db)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO probe_verdicts (host, netns, proto, addr, port, state, at, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(db)?;
            for v in verdicts {
                insert
                    .execute(params![
                        host,
                        to_bits(v.place.netns),
                        proto_code(v.place.proto),
                        v.place.addr.to_string(),
                        v.place.port,
                        v.state.as_str(),
                        v.at.as_millisecond(),
                        v.detail,
                    ])
                    .map_err(db)?;
            }
            Ok(())
        })
    }

    fn probe_verdicts(&self, host: &str) -> Result<Vec<ProbeVerdict>, StoreError> {
        type Raw = (i64, i64, String, u16, String, i64, String);
        let raws = self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT netns, proto, addr, port, state, at, detail FROM probe_verdicts WHERE host = ?1",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([host], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<Raw>, _>>().map_err(db)
        })?;
        let mut verdicts = raws
            .into_iter()
            .map(|(netns, proto, addr, port, state, at, detail)| {
                probe_verdict(from_bits(netns), proto, &addr, port, &state, at, detail)
            })
            .collect::<Result<Vec<_>, _>>()?;
        verdicts.sort_by_key(|v| v.place);
        Ok(verdicts)
    }

    fn probed_hosts(&self, since: jiff::Timestamp) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT DISTINCT host FROM probe_verdicts WHERE at >= ?1 ORDER BY host")
                .map_err(db)?;
            let rows = stmt.query_map([since.as_millisecond()], |r| r.get(0)).map_err(db)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(db)
        })
    }
}

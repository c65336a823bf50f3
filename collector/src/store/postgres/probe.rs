//! Probe verdicts in PostgreSQL: the same rows as the SQLite store's,
//! replaced whole by each probe of a host in one transaction.

use super::{pg, PostgresStore};
use crate::store::stored::{from_bits, probe_verdict, proto_code, to_bits};
use crate::store::{Probes, StoreError};
use portwatch_model::ProbeVerdict;

impl Probes for PostgresStore {
    fn replace_probe_verdicts(&self, host: &str, verdicts: &[ProbeVerdict]) -> Result<(), StoreError> {
        self.block(async |inner| {
            inner
                .transact(async |tx| {
                    tx.execute("DELETE FROM probe_verdicts WHERE host = $1", &[&host])
                        .await
                        .map_err(pg)?;
                    let insert = tx
                        .prepare(
                            "INSERT INTO probe_verdicts (host, netns, proto, addr, port, state, at, detail)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                             ON CONFLICT (host, netns, proto, addr, port) DO UPDATE
                             SET state = excluded.state, at = excluded.at, detail = excluded.detail",
                        )
                        .await
                        .map_err(pg)?;
                    for v in verdicts {
                        let proto = proto_code(v.place.proto) as i16;
                        tx.execute(
                            &insert,
                            &[
                                &host,
                                &to_bits(v.place.netns),
                                &proto,
                                &v.place.addr.to_string(),
                                &i32::from(v.place.port),
                                &v.state.as_str(),
                                &v.at.as_millisecond(),
                                &v.detail,
                            ],
                        )
                        .await
                        .map_err(pg)?;
                    }
                    Ok(())
                })
                .await
        })
    }

    fn probe_verdicts(&self, host: &str) -> Result<Vec<ProbeVerdict>, StoreError> {
        self.block(async |inner| {
            let client = inner.client().await?;
            let rows = client
                .query(
                    "SELECT netns, proto, addr, port, state, at, detail FROM probe_verdicts WHERE host = $1",
                    &[&host],
                )
                .await
                .map_err(pg)?;
            let mut verdicts = rows
                .iter()
                .map(|r| {
                    let port: i32 = r.get(3);
                    let port = u16::try_from(port)
                        .map_err(|_| crate::store::stored::corrupt(format_args!("probe verdict: port {port}")))?;
                    probe_verdict(
                        from_bits(r.get(0)),
                        i64::from(r.get::<_, i16>(1)),
                        r.get(2),
                        port,
                        r.get(4),
                        r.get(5),
                        r.get(6),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            verdicts.sort_by_key(|v| v.place);
            Ok(verdicts)
        })
    }

    fn probed_hosts(&self, since: jiff::Timestamp) -> Result<Vec<String>, StoreError> {
        self.block(async |inner| {
            let client = inner.client().await?;
            let rows = client
                .query(
                    r#"SELECT DISTINCT host COLLATE "C" FROM probe_verdicts WHERE at >= $1 ORDER BY 1"#,
                    &[&since.as_millisecond()],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

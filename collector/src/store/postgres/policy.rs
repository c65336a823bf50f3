//! Tokens, baselines, alerts and the outbox in PostgreSQL. (In progress on
//! this branch: every call answers an error until written.)

use jiff::Timestamp;
use portwatch_model::baseline::{BaselineAction, BaselineLogRow, StoredBaseline};
use portwatch_model::{AlertEvent, AlertRow, AlertState, Finding, Kind};

use super::PostgresStore;
use crate::store::{
    AckOutcome, Alerts, Baselines, Outbox, OutboxEvent, Rotated, SinkProgress, StoreError, TokenRow, Tokens,
};

fn unwritten<T>() -> Result<T, StoreError> {
    Err(StoreError::Database("not written yet for PostgreSQL".to_owned()))
}

impl Tokens for PostgresStore {
    fn create_token(&self, _token: &TokenRow) -> Result<(), StoreError> {
        unwritten()
    }
    fn token_by_hash(&self, _hash: &str) -> Result<Option<TokenRow>, StoreError> {
        unwritten()
    }
    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        unwritten()
    }
    fn revoke_token(&self, _name: &str, _at: Timestamp) -> Result<bool, StoreError> {
        unwritten()
    }
    fn rotate_token(
        &self,
        _name: &str,
        _hash: &str,
        _at: Timestamp,
        _until: Timestamp,
    ) -> Result<Option<Rotated>, StoreError> {
        unwritten()
    }
}

impl Baselines for PostgresStore {
    fn put_baseline(
        &self,
        _name: &str,
        _source: &str,
        _actor: &str,
        _comment: Option<&str>,
        _at: Timestamp,
    ) -> Result<BaselineAction, StoreError> {
        unwritten()
    }
    fn remove_baseline(
        &self,
        _name: &str,
        _actor: &str,
        _comment: Option<&str>,
        _at: Timestamp,
    ) -> Result<bool, StoreError> {
        unwritten()
    }
    fn baselines(&self) -> Result<Vec<StoredBaseline>, StoreError> {
        unwritten()
    }
    fn baseline_log(&self, _name: Option<&str>) -> Result<Vec<BaselineLogRow>, StoreError> {
        unwritten()
    }
}

impl Alerts for PostgresStore {
    fn sync_alerts(
        &self,
        _hosts: &[String],
        _findings: &[Finding],
        _max_open: usize,
        _now: Timestamp,
    ) -> Result<Vec<AlertEvent>, StoreError> {
        unwritten()
    }
    fn alerts(
        &self,
        _state: Option<AlertState>,
        _host: Option<&str>,
        _limit: usize,
    ) -> Result<Vec<AlertRow>, StoreError> {
        unwritten()
    }
    fn ack_alert(&self, _id: i64, _actor: &str, _comment: &str, _at: Timestamp) -> Result<AckOutcome, StoreError> {
        unwritten()
    }
    fn active_alert_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        unwritten()
    }
    fn active_alert_counts(&self) -> Result<Vec<(Kind, AlertState, u64)>, StoreError> {
        unwritten()
    }
}

impl Outbox for PostgresStore {
    fn alert_events_after(&self, _after: i64, _limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        unwritten()
    }
    fn alert_event_hosts_after(&self, _after: i64, _limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        unwritten()
    }
    fn alert_event(&self, _id: i64) -> Result<Option<OutboxEvent>, StoreError> {
        unwritten()
    }
    fn sink_progress(&self, _sink: &str) -> Result<SinkProgress, StoreError> {
        unwritten()
    }
    fn set_sink_progress(&self, _sink: &str, _cursor: i64, _done: &[i64]) -> Result<(), StoreError> {
        unwritten()
    }
}

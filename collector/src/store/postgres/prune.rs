//! Retention in PostgreSQL. (In progress on this branch: every call answers
//! an error until written.)

use super::PostgresStore;
use crate::store::{Forgotten, Maintenance, PruneCursor, PrunePlan, Pruned, StoreError};

fn unwritten<T>() -> Result<T, StoreError> {
    Err(StoreError::Database("not written yet for PostgreSQL".to_owned()))
}

impl Maintenance for PostgresStore {
    fn size_bytes(&self) -> Result<u64, StoreError> {
        unwritten()
    }
    fn prune_count(&self, _plan: &PrunePlan) -> Result<Pruned, StoreError> {
        unwritten()
    }
    fn prune(&self, _plan: &PrunePlan, _cursor: &mut PruneCursor, _batch_rows: usize) -> Result<Pruned, StoreError> {
        unwritten()
    }
    fn reclaim(&self, _pages: u32) -> Result<u64, StoreError> {
        unwritten()
    }
    fn forget_host(&self, _name: &str) -> Result<Option<Forgotten>, StoreError> {
        unwritten()
    }
}

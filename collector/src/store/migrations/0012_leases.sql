-- Leases (see `store::Leases`): what must run in one collector at a time runs where its lease is held.
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

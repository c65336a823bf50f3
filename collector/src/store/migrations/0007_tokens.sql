-- portwatch collector schema: several tokens per name, so a token can be rotated.
--
-- A name (`agent:HOST`, or an operator token's) was UNIQUE, and revoked rows
-- are kept, so a revoked token could never be replaced. Now a name may have
-- many rows, of which at most one is current (`revoked_at` NULL); the others
-- are revoked, or end at a time in the future: `revoked_at` is when a token
-- stops authenticating, in the past for a revoked token, in the future for
-- one that a rotation replaced and that still works until then (the
-- overlap). Hashes stay unique: a secret names one token.
--
-- SQLite cannot drop a UNIQUE constraint in place: the table is copied into
-- a new one, ids and hashes kept, and the old one dropped (no table refers
-- to tokens).
CREATE TABLE tokens_new (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('agent', 'read', 'admin')),
    host       TEXT,
    hash       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    -- When it stops authenticating: past, revoked; future, expires then; NULL, current.
    revoked_at INTEGER
) STRICT;
INSERT INTO tokens_new (id, name, role, host, hash, created_at, revoked_at)
    SELECT id, name, role, host, hash, created_at, revoked_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;

-- At most one current token per name; also the index of lookups by name.
CREATE UNIQUE INDEX tokens_current_by_name ON tokens (name) WHERE revoked_at IS NULL;
CREATE INDEX tokens_by_name ON tokens (name, revoked_at);

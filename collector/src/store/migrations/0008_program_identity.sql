-- Programs are interned by content, unique by construction rather than by
-- one writer checking before it inserts: two writers storing the same new
-- program at once now conflict on this index, and the second takes the
-- first's row (`INSERT ... ON CONFLICT DO NOTHING`, then read it).
-- A NULL column is indexed as an empty blob, which no TEXT or INTEGER value
-- equals (SQLite's UNIQUE treats NULLs as distinct, which would let
-- duplicates with a NULL column through). With one writer so far there are
-- no duplicates to merge.
CREATE UNIQUE INDEX programs_identity ON programs (
    hash, name, ifnull(exe, x''), ifnull(cmdline, x''), ifnull(uid, x''), ifnull(user, x''),
    ifnull(container, x''), ifnull(unit, x'')
);
DROP INDEX programs_by_hash;

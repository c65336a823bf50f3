-- portwatch collector schema: programs unique by a slot, not by an index of
-- their whole content.
--
-- Migration 8 made programs unique by construction with a unique index over
-- every column: a second copy of each program's content, 17 % of a fleet's
-- database (38 bytes a stored change). Now `hash` is a program's slot, unique:
-- the FNV-1a 64 of its content, or, when another program holds that value
-- (a collision), the first free value after it, at most PROGRAM_PROBE values
-- on (see `program_id` in sqlite.rs). Two writers storing the same new
-- program at once still conflict (on its slot) and the second takes the
-- first's row; the content still decides equality (every program of the
-- slots is compared).
--
-- Written so that it can run again on a database that has it (a test that
-- takes a database back to an earlier version keeps later objects).

-- Programs sharing a hash (none is expected: FNV-1a 64 collides about once
-- in four billion programs) take the values after it, in id order.
UPDATE programs SET hash = programs.hash + ranked.rank
FROM (SELECT id, row_number() OVER (PARTITION BY hash ORDER BY id) - 1 AS rank FROM programs) AS ranked
WHERE programs.id = ranked.id AND ranked.rank > 0;

CREATE UNIQUE INDEX IF NOT EXISTS programs_by_slot ON programs (hash);
DROP INDEX IF EXISTS programs_identity;
DROP INDEX IF EXISTS programs_by_hash;

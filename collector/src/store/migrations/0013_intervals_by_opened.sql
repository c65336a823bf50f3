-- Intervals in opening order, for the reads that go through the whole history in that order a
-- chunk at a time (export, fleet-wide trends): without it each chunk sorted the whole table.
CREATE INDEX IF NOT EXISTS intervals_by_opened ON intervals (opened_at);

-- How the host's agent sees listeners, from its latest snapshot's facts:
-- 'events' (kernel events) or 'polling'; NULL for agents that do not say.
ALTER TABLE hosts ADD COLUMN detection TEXT;

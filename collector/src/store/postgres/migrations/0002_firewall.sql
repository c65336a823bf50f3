-- The firewall's answer for a listener, as its JSON: part of the interval's key (see the SQLite
-- store's 0014_firewall.sql). NULL where the agent did not evaluate it. Added to every partition.
ALTER TABLE intervals ADD COLUMN IF NOT EXISTS firewall text;

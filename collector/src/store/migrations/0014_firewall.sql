-- The firewall's answer for a listener (what the host's nftables ruleset does with new inbound
-- connections to it), as its JSON: part of the interval's key, so a change of it closes the
-- interval and opens another. NULL where the agent did not evaluate it (loopback, an agent with
-- firewall = false, an agent older than the field: every interval before this migration).
ALTER TABLE intervals ADD COLUMN firewall TEXT;

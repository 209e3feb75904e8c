-- The extra channels a manifest maps with poll.map.fields (the latest value of each), JSON text.
ALTER TABLE runs ADD COLUMN fields TEXT NOT NULL DEFAULT '{}';

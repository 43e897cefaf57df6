-- A dead letter is known by its id, made from the record itself (topic with its prefix, position, timestamp,
-- a digest of its bytes). The embedded broker keeps topics in memory, so after a restart, or under another
-- topic prefix, a different event can sit at the same (consumer, topic, partition, offset): the unique key
-- on those made such a letter vanish into ON CONFLICT DO NOTHING.
ALTER TABLE dead_letters DROP CONSTRAINT IF EXISTS dead_letters_consumer_source_topic_partition_offset_key;
CREATE INDEX IF NOT EXISTS dead_letters_by_position ON dead_letters (consumer, source_topic, partition, "offset");

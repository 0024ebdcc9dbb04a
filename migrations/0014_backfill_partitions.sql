-- Backfills over the partitions of EVENTS (streams.event_partitions): a run scans the
-- partitions one after the other, in the order of their numbers. `partition` is the one being
-- scanned, and start_sequence, position and end_sequence are sequences of its stream.
-- `partition_ends` holds every partition's last sequence when the backfill was created (index
-- 0 is partition 0): a partition past its end, or created later, holds only newer events.
-- Rows from before partitions have NULL: partition 0 alone, ending at end_sequence.
ALTER TABLE backfills
    ADD COLUMN partition      SMALLINT NOT NULL DEFAULT 0 CHECK (partition >= 0),
    ADD COLUMN partition_ends BIGINT[];

-- Retention (issue 14): group messages are pruned by age and by count, per deployment and per
-- group, always as a prefix of each group's msgids, so the msgids kept stay dense.
--
-- group_msgs becomes partitioned by range on ts, so messages past the deployment's age limit
-- go a whole partition at a time (DETACH, DROP) instead of row by row. What existed before
-- becomes its first partition, attached rather than copied.

-- ts only grows with msgid inside a group: herald_append stamps each message at least the
-- group's last_ts (and at most PostgreSQL's clock), so every age cut is a msgid prefix. New
-- groups start from their creation time.
ALTER TABLE groups
    ADD COLUMN last_ts bigint NOT NULL DEFAULT (extract(epoch FROM now()) * 1000)::bigint,
    -- The group's own limits, set by the admin API; NULL: the deployment's. The stricter of
    -- the group's and the deployment's applies.
    ADD COLUMN retention_max_age_s bigint CHECK (retention_max_age_s > 0),
    ADD COLUMN retention_max_messages bigint CHECK (retention_max_messages > 0);

UPDATE groups g SET last_ts = m.last_ts
FROM (SELECT gid, max(ts) AS last_ts FROM group_msgs GROUP BY gid) m
WHERE m.gid = g.gid;

-- How far the pruner has pruned each group: every msgid at or below through_msgid is gone.
-- A lower bound only (partitions dropped whole are not counted here): it tells the pruner
-- which groups may have work, never which messages exist. Kept off the groups row so that
-- pruning never waits for, nor holds, the lock senders take.
CREATE TABLE group_msgs_pruned (
    gid           bigint PRIMARY KEY,
    through_msgid bigint NOT NULL
);

-- The partitions of group_msgs and their ts ranges [from_ts, to_ts) (NULL from_ts: no lower
-- bound), kept by herald_ensure_partitions and herald_detach_partition (sql/functions/
-- retention.sql) so neither has to parse the catalog's partition bounds.
CREATE TABLE group_msgs_partitions (
    name    text PRIMARY KEY,
    from_ts bigint,
    to_ts   bigint NOT NULL UNIQUE
);

ALTER TABLE group_msgs RENAME TO group_msgs_first;
ALTER INDEX group_msgs_pkey RENAME TO group_msgs_first_pkey;

-- A partitioned table's unique constraints must hold the partition key, so the primary key
-- takes ts too. msgids stay unique per group without it: they come from the group's counter
-- under the group row's lock. The resend look-up ((gid, sender_uid, cmid), unique before) is
-- a plain index for the same reason; herald_append looks a resend up after taking the group
-- row's lock, which serialises every writer of the group, so no two rows of one
-- (gid, sender_uid, cmid) are ever stored.
CREATE TABLE group_msgs (
    gid        bigint NOT NULL,
    msgid      bigint NOT NULL,
    sender_uid bigint NOT NULL,
    cmid       text NOT NULL,
    ts         bigint NOT NULL,
    -- The body exactly as the client sent it (valid JSON, checked at the edge);
    -- text, not jsonb, so it round-trips byte for byte.
    body       text NOT NULL,
    PRIMARY KEY (gid, msgid, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX group_msgs_resends ON group_msgs (gid, sender_uid, cmid);

-- The messages so far become the first partition, up to now or past their newest ts. The
-- CHECK proves the partition's bound, so ATTACH does not scan the rows again; the indexes
-- of the parent are built on it once.
DO $$
DECLARE
    v_to bigint := greatest(
        (extract(epoch FROM now()) * 1000)::bigint,
        (SELECT max(ts) + 1 FROM group_msgs_first));
BEGIN
    EXECUTE format('ALTER TABLE group_msgs_first ADD CONSTRAINT group_msgs_first_ts CHECK (ts < %s)', v_to);
    ALTER TABLE group_msgs_first DROP CONSTRAINT group_msgs_gid_sender_uid_cmid_key;
    ALTER TABLE group_msgs_first DROP CONSTRAINT group_msgs_first_pkey;
    EXECUTE format('ALTER TABLE group_msgs ATTACH PARTITION group_msgs_first FOR VALUES FROM (MINVALUE) TO (%s)', v_to);
    ALTER TABLE group_msgs_first DROP CONSTRAINT group_msgs_first_ts;
    INSERT INTO group_msgs_partitions (name, from_ts, to_ts) VALUES ('group_msgs_first', NULL, v_to);
END;
$$;

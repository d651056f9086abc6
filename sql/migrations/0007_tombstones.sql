-- Tombstones (issue 14): a recalled or erased message keeps its row and its msgid, so msgids
-- stay dense, and loses its body. Columns are only added (nullable: no table rewrite), as
-- group_msgs may be partitioned by then.
--
-- tombstone: NULL for a message as sent, else why its body is gone: 'recalled' (by its
-- sender or a group admin) or 'erased' (its sender's data was erased). The body of a
-- tombstoned row is the JSON text 'null', so every reader of bodies still reads JSON.
ALTER TABLE group_msgs
    ADD COLUMN tombstone     text,
    -- Who recalled it (NULL: the admin API, or an erasure).
    ADD COLUMN tombstoned_by bigint,
    -- When, in ms since the epoch.
    ADD COLUMN tombstoned_at bigint;

-- A user's messages across every group, in (gid, msgid) order: what an export streams and
-- an erasure tombstones, batch by batch, without reading anyone else's messages. On a
-- partitioned group_msgs this index is made on every partition.
CREATE INDEX group_msgs_by_sender ON group_msgs (sender_uid, gid, msgid);

-- When a user's data was erased (ms since the epoch); NULL for a user never erased. The row
-- itself stays, blanked and deactivated: their tombstoned messages and other users' friend
-- rows still name the uid.
ALTER TABLE users ADD COLUMN erased_at bigint;

-- Read receipts (seed 004 keeps received and read apart): how far each member has read a
-- group, beside how far they have received it (last_ack_msgid). Both only move forward,
-- written in coalesced batches by the gateway's ack writers.
ALTER TABLE group_members ADD COLUMN last_read_msgid bigint NOT NULL DEFAULT 0;

-- Members so far have read what they acked: the best guess there is.
UPDATE group_members SET last_read_msgid = last_ack_msgid;

-- Herald core schema: users, groups, memberships and the group message log.
-- Each group message is stored once (group_msgs); each member keeps one watermark
-- (group_members.last_ack_msgid) instead of a per-member queue.

CREATE TABLE users (
    uid        bigint PRIMARY KEY CHECK (uid > 0),
    nickname   text NOT NULL DEFAULT '',
    avatar     text NOT NULL DEFAULT '',
    signature  text NOT NULL DEFAULT '',
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Automatically assigned gids come from this sequence; admins may also choose a gid.
CREATE SEQUENCE groups_gid_seq;

CREATE TABLE groups (
    gid        bigint PRIMARY KEY DEFAULT nextval('groups_gid_seq') CHECK (gid > 0),
    name       text NOT NULL,
    owner_uid  bigint NOT NULL REFERENCES users (uid),
    -- The group's msgid counter. Writers take this row's lock, so msgids are dense and
    -- commit order equals msgid order, whichever node writes.
    last_msgid bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE group_members (
    gid            bigint NOT NULL REFERENCES groups (gid) ON DELETE CASCADE,
    uid            bigint NOT NULL REFERENCES users (uid),
    role           text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    -- Everything at or below this msgid has reached the member. Only ever moves forward.
    last_ack_msgid bigint NOT NULL DEFAULT 0,
    joined_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gid, uid)
);

CREATE INDEX group_members_by_uid ON group_members (uid);

-- No foreign key to groups: every insert already holds the group row's lock, and a
-- per-row FK check would cost the batched insert dearly.
CREATE TABLE group_msgs (
    gid        bigint NOT NULL,
    msgid      bigint NOT NULL,
    sender_uid bigint NOT NULL,
    cmid       text NOT NULL,
    ts         bigint NOT NULL,
    -- The body exactly as the client sent it (valid JSON, checked at the edge);
    -- text, not jsonb, so it round-trips byte for byte.
    body       text NOT NULL,
    PRIMARY KEY (gid, msgid),
    UNIQUE (gid, sender_uid, cmid)
);

-- Store schema, version 2: one message, many deliveries; endpoints by number; a seen-set in two
-- generations; the airtime each radio spent. Embedded into the binary
-- (gateway/src/store/schema.rs, `MIGRATIONS`) and applied by sqlx's Migrator at open, in one
-- transaction with the conversion of a version-1 store below. Never edit this file once
-- released: sqlx checks each applied migration's checksum.
--
-- Everything here is chosen for a small file and few page writes on an SD card: no secondary
-- index at all (each primary key is the order its table is read in), small integers instead of
-- repeated names, and the packet stored once however many destinations it has.

-- Names of endpoints (radios, MQTT, XMPP, peers) as small numbers. The store maps names to ids
-- in memory and adds a name the first time it is used; ids are never reused.
CREATE TABLE endpoint (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);

-- One row per accepted message still owed to at least one destination, holding the packet
-- once, as heard (encoded, encrypted for `channel`); what each destination needs is rendered
-- from it at send time. The row goes with its last delivery: the store looks for another
-- delivery of it (a few primary-key seeks, one per endpoint) rather than keeping a count that
-- every confirm would have to rewrite.
CREATE TABLE message (
    -- Handed out by the store in increasing order and never reused while it is open, so a late
    -- confirm of a delivery that was evicted or expired never hits a newer row, and id order is
    -- arrival order. Not AUTOINCREMENT: that rewrites sqlite_sequence on every accept, and no
    -- key outlives the process that read it.
    id          INTEGER PRIMARY KEY,
    from_node   INTEGER NOT NULL,  -- NodeId as u32
    packet_id   INTEGER NOT NULL,  -- PacketId as u32
    priority    INTEGER NOT NULL,  -- Class::rank(): 0 = direct (most urgent) .. 3 = telemetry;
                                   -- its deliveries' too, which is how they are found
    source      INTEGER,           -- endpoint.id it was heard on; NULL for rows from version 1
    channel     TEXT    NOT NULL,  -- the channel `packet` is encrypted for
    packet      BLOB    NOT NULL,  -- the encoded packet, opaque to the store
    enqueued_at INTEGER NOT NULL,  -- unix ms
    expires_at  INTEGER NOT NULL   -- unix ms; Store::expire drops its deliveries then
);

-- One row per (message, destination) still to deliver. The primary key is the drain order
-- (destination, most urgent class first, then arrival), so Store::next, the size cap's
-- eviction (front of one class) and Store::expire (front of each class: one class of one
-- destination shares a TTL) all read it from the front, with no other index.
CREATE TABLE delivery (
    destination INTEGER NOT NULL,  -- endpoint.id
    priority    INTEGER NOT NULL,  -- the message's class rank, repeated here for the order
    message     INTEGER NOT NULL,  -- message.id
    leg         INTEGER NOT NULL,  -- numbers the deliveries of one message to one destination
    to_channel  TEXT,              -- channel on the destination; NULL = the message's channel
    hops        INTEGER NOT NULL DEFAULT 0,  -- hop limit on arrival (radios)
    attempts    INTEGER NOT NULL DEFAULT 0,  -- counted failures (Store::fail)
    last_error  TEXT,
    PRIMARY KEY (destination, priority, message, leg)
) WITHOUT ROWID;

-- The seen-set in two generations: (from, id) is seen if it is in either; new entries go into
-- the current one. Rotation empties the other (DELETE without WHERE: a truncation, no scan)
-- and makes it current, so an entry lives between one and two windows and pruning needs
-- neither a timestamp per entry nor an index on it. Packet id 0 is never recorded.
CREATE TABLE seen_a (
    from_node INTEGER NOT NULL,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (from_node, packet_id)
) WITHOUT ROWID;

CREATE TABLE seen_b (
    from_node INTEGER NOT NULL,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (from_node, packet_id)
) WITHOUT ROWID;

-- Which generation is current and when it started (unix ms; NULL: not anchored yet, the first
-- Store::rotate_seen anchors it).
CREATE TABLE seen_generation (
    only    INTEGER PRIMARY KEY CHECK (only = 0),
    current TEXT    NOT NULL CHECK (current IN ('a', 'b')),
    started INTEGER
);

-- What each radio put on the air and when (wall clock, unix ms), written in the transaction
-- that confirms the delivery, so an airtime governor restarted after a crash still counts it.
-- Rows arrive in time order, so pruning walks from the front (rowid order) and stops.
CREATE TABLE airtime (
    destination INTEGER NOT NULL,  -- endpoint.id
    at          INTEGER NOT NULL,  -- unix ms
    micros      INTEGER NOT NULL   -- time on air
);

-- Deliveries set aside for good (Store::reject), kept for inspection. Names, not ids, so a row
-- reads on its own; few constraints, so a damaged row can always be moved here.
CREATE TABLE dead_letter_v2 (
    id          INTEGER PRIMARY KEY,
    destination TEXT,
    source      TEXT,
    from_node   INTEGER,
    packet_id   INTEGER,
    priority    INTEGER,
    channel     TEXT,
    to_channel  TEXT,
    hops        INTEGER,
    packet      BLOB,
    enqueued_at INTEGER,
    expires_at  INTEGER,
    attempts    INTEGER,
    last_error  TEXT,
    rejected_at INTEGER NOT NULL,
    reason      TEXT    NOT NULL
);

-- Conversion of a version-1 store (on a new one these tables are empty).
--
-- Each outbox row becomes a message with one delivery: its packet is already encrypted for the
-- row's channel, so the message's channel is that one and rendering it "to the same channel" is
-- the identity. The message keeps the row's seq as its id (order and uniqueness preserved).
INSERT INTO endpoint (name) SELECT DISTINCT destination FROM outbox ORDER BY destination;

INSERT INTO message (id, from_node, packet_id, priority, source, channel, packet, enqueued_at,
                     expires_at)
SELECT seq, from_node, packet_id, priority, NULL, channel, packet, enqueued_at, expires_at
FROM outbox;

INSERT INTO delivery (destination, priority, message, leg, to_channel, hops, attempts, last_error)
SELECT e.id, o.priority, o.seq, 0, NULL, o.hop_limit, o.attempts, o.last_error
FROM outbox o JOIN endpoint e ON e.name = o.destination;

-- The old seen-set is the first generation, started at its newest entry: every entry lives at
-- least one more window.
INSERT INTO seen_a (from_node, packet_id) SELECT from_node, packet_id FROM seen;

INSERT INTO seen_generation (only, current, started)
VALUES (0, 'a', (SELECT MAX(first_seen) FROM seen));

INSERT INTO dead_letter_v2 (id, destination, source, from_node, packet_id, priority, channel,
                            to_channel, hops, packet, enqueued_at, expires_at, attempts,
                            last_error, rejected_at, reason)
SELECT seq, destination, NULL, from_node, packet_id, priority, channel, channel, hop_limit,
       packet, enqueued_at, expires_at, attempts, last_error, rejected_at, reason
FROM dead_letter;

DROP TABLE outbox;
DROP TABLE seen;
DROP TABLE dead_letter;
ALTER TABLE dead_letter_v2 RENAME TO dead_letter;

-- Store schema, version 1: the seen-set, the outbox and the dead letters.
-- Embedded into the binary (gateway/src/store/mod.rs, `MIGRATIONS`) and applied by sqlx's
-- Migrator at open. Never edit this file once released: sqlx checks each applied migration's
-- checksum, so a change goes into a new, higher-numbered file.

-- Every (from, id) the gateway accepted, so a packet heard twice (two radios, a peer hub and
-- the radio, a retransmission) is delivered once. Packet id 0 is never recorded.
CREATE TABLE seen (
    from_node  INTEGER NOT NULL,  -- NodeId as u32
    packet_id  INTEGER NOT NULL,  -- PacketId as u32, never 0
    first_seen INTEGER NOT NULL,  -- unix ms when first accepted; prune_seen cuts on it
    PRIMARY KEY (from_node, packet_id)
) WITHOUT ROWID;

CREATE INDEX seen_by_time ON seen (first_seen);

-- One row per (message, destination) still to deliver. A row is deleted only when the
-- destination confirmed it (or it expired, was evicted by the size cap, or was rejected).
CREATE TABLE outbox (
    -- AUTOINCREMENT: a seq is never reused, so a late confirm of an evicted row can never
    -- delete a newer one, and seq order is arrival order.
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    destination     TEXT    NOT NULL,
    priority        INTEGER NOT NULL,  -- Class::rank(): 0 = direct (most urgent) .. 3 = telemetry
    from_node       INTEGER NOT NULL,
    packet_id       INTEGER NOT NULL,
    channel         TEXT    NOT NULL,  -- channel name on the destination
    hop_limit       INTEGER NOT NULL,
    packet          BLOB    NOT NULL,  -- encoded packet, opaque to the store
    enqueued_at     INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT
);

-- Store::next (due rows of one destination, most urgent class first, then oldest first) and
-- the cap's eviction (oldest row of one class of one destination).
CREATE INDEX outbox_next ON outbox (destination, priority, seq);
-- Store::next_due: earliest next_attempt_at of one destination.
CREATE INDEX outbox_due ON outbox (destination, next_attempt_at);
-- Store::expire: rows past expires_at.
CREATE INDEX outbox_expiry ON outbox (expires_at);

-- Deliveries the destination refused for good (Store::reject), kept for inspection.
CREATE TABLE dead_letter (
    seq         INTEGER PRIMARY KEY,  -- the outbox seq the row had
    destination TEXT    NOT NULL,
    priority    INTEGER NOT NULL,
    from_node   INTEGER NOT NULL,
    packet_id   INTEGER NOT NULL,
    channel     TEXT    NOT NULL,
    hop_limit   INTEGER NOT NULL,
    packet      BLOB    NOT NULL,
    enqueued_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    last_error  TEXT,
    rejected_at INTEGER NOT NULL,
    reason      TEXT    NOT NULL
);

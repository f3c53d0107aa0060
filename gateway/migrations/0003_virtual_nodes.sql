-- Store schema, version 3: virtual nodes, the mesh identities the gateway gives to people of
-- other worlds (XMPP users), so mesh people see a named sender and can answer them directly.
-- Embedded into the binary (gateway/src/store/schema.rs, `MIGRATIONS`) and applied by sqlx's
-- Migrator at open. Never edit this file once released: sqlx checks each applied migration's
-- checksum.
--
-- One row per owner, made the first time the owner speaks and kept: the node id and key must
-- stay the same across restarts, or mesh people would see a new sender (and PKI messages to
-- the old key would be lost).
CREATE TABLE virtual_node (
    -- Who the node stands for, as the endpoint that made it names them (the bare JID of an
    -- XMPP user, normalised by that endpoint); any kind of owner can use it.
    owner      TEXT    PRIMARY KEY,
    -- NodeId as u32: derived from the owner (gateway/src/store/virtual_nodes.rs), unique.
    node       INTEGER NOT NULL UNIQUE CHECK (node BETWEEN 4 AND 4294967294),
    -- The node's x25519 private key, 32 bytes from the OS random generator. Never logged.
    secret     BLOB    NOT NULL CHECK (length(secret) = 32),
    created_at INTEGER NOT NULL   -- unix ms
) WITHOUT ROWID;

-- Store schema, version 4: the hub a message came from, so a hub forwarding it to another
-- names the gateway that first put it on the federation rather than itself.
-- Embedded into the binary (gateway/src/store/schema.rs, `MIGRATIONS`) and applied by sqlx's
-- Migrator at open. Never edit this file once released: sqlx checks each applied migration's
-- checksum.
--
-- NULL: heard by this hub (its radios, broker or XMPP server), or kept from version 3. A
-- delivery to a peer carries, in `delivery.hops`, how many hubs the message will have crossed
-- when the peer has it; the router will not queue one beyond `federation.max_hops`.
ALTER TABLE message ADD COLUMN origin INTEGER CHECK (origin BETWEEN 0 AND 4294967295);

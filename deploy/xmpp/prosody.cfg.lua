-- Prosody 0.12 for a hub whose people chat with the mesh through Archipel.
--
-- What Archipel needs of the server, all below:
--   * a component port Archipel connects to (XEP-0114), and a Component line for its domain
--     with the shared secret: mesh nodes become contacts !a1b2c3d4@mesh.hub.lan;
--   * a MUC service with message archives (mod_muc_mam), where each bridged mesh channel is a
--     persistent room that Archipel creates and configures itself; someone joining tomorrow
--     reads today's mesh traffic from the archive.
-- Replace hub.lan with your server's domain everywhere (mesh. and rooms. are subdomains of it
-- by convention only; any names work if the clients can reach them). The hub has no DNS:
-- clients are pointed at the server's IP address, and the domains below are only names.
--
-- Check it:   prosodyctl --config /etc/prosody/prosody.cfg.lua check config
-- Then match Archipel's [[xmpp]] section (deploy/gateway.toml):
--   server = "127.0.0.1:5347", domain = "mesh.hub.lan", rooms = "rooms.hub.lan",
--   secret_file = a file holding the same component_secret as below.

-- Who may administer the server (prosodyctl, ad-hoc commands, and owner of every room).
admins = { "admin@hub.lan" }

-- Debian's place for it; `prosodyctl` finds the running server through it.
pidfile = "/var/run/prosody/prosody.pid"

modules_enabled = {
    "disco"; "roster"; "saslauth"; "tls"; "ping"; "carbons"; "smacks";
    "vcard_legacy"; -- vCards as phone clients read them
    "mam";          -- users' own message archives: a direct message from a node reaches a
                    -- phone that was offline
    "register";     -- people change their password from their client; accounts are made
                    -- with `prosodyctl adduser alice@hub.lan` (open registration stays off)
    "admin_shell";
}
-- A LAN hub with no DNS does not federate.
modules_disabled = { "s2s" }

-- Who listens where. The component port only needs to be reachable from the machine running
-- Archipel: keep it on loopback when both run on the same machine.
c2s_ports = { 5222 }
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

-- Clients on the LAN use TLS with the hub's own CA (see the certificates directory); nobody
-- types a password in clear over the hub's Wi-Fi.
c2s_require_encryption = true
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
certificates = "certs"

-- Users' own archives (mod_mam): kept a month, on for every conversation.
archive_expires_after = "4w"
default_archive_policy = true
-- Both archives (users' and rooms') hold at most this many items per store with internal
-- storage before they stop taking more; a busy channel over a month needs more than the
-- default (about 10000).
storage_archive_item_limit = 200000

log = {
    info = "/var/log/prosody/prosody.log";
    error = "/var/log/prosody/prosody.err";
}

VirtualHost "hub.lan"

-- The rooms: one per bridged mesh channel, created by Archipel (which is the owner and sets
-- the room's name and description), plus any room the hub's people make for themselves.
Component "rooms.hub.lan" "muc"
    name = "Hub rooms (mesh channels are bridged here)"
    modules_enabled = { "muc_mam" }
    -- REQUIRED: with the default (true) a room created by joining it stays locked until its
    -- owner submits a configuration form, and nobody else can enter in the meantime.
    muc_room_locking = false
    -- The bridge creates rooms from its own domain (mesh.hub.lan). "local" would allow only
    -- hub.lan users to create rooms and refuse it; on a LAN-only server, let anyone create
    -- rooms, or set "admin" and add "bridge@mesh.hub.lan" to admins above.
    restrict_room_creation = false
    -- Rooms outlive their last occupant and a server restart, and are listed, so people find
    -- the mesh channels in their client's room browser.
    muc_room_default_persistent = true
    muc_room_default_public = true
    -- Room history: a join replays the last messages; older ones come from the archive.
    muc_room_default_history_length = 20
    -- Archive every room's messages (not presences) from the start, for two weeks.
    muc_log_by_default = true
    muc_log_presences = false
    muc_log_expires_after = "2w"
    -- Most archived messages a client may fetch in one query page.
    max_archive_query_results = 100

-- Archipel, as a component: the mesh's nodes are JIDs of this domain. The secret is shared
-- with Archipel's secret_file; make one with `openssl rand -hex 24` and keep this file
-- readable by the prosody user only (chmod 640, group prosody).
Component "mesh.hub.lan"
    component_secret = "change-me-to-a-long-random-secret"

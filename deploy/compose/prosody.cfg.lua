-- The hub's XMPP server in deploy/compose/compose.yaml: deploy/xmpp/prosody.cfg.lua (which
-- explains every setting) adapted to a container: logs to the console, the component port open
-- on the compose network (the gateway is another container), and the component secret read
-- from the compose secret /run/secrets/xmpp_secret, the file the gateway reads too.

admins = { "admin@hub.lan" }

modules_enabled = {
    "disco"; "roster"; "saslauth"; "tls"; "ping"; "carbons"; "smacks";
    "vcard_legacy"; "mam"; "register"; "admin_shell";
}
modules_disabled = { "s2s" }

c2s_ports = { 5222 }
component_ports = { 5347 }
-- Every interface of the container: only the compose network reaches it (5347 is not published).
component_interfaces = { "*" }

c2s_require_encryption = true
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
-- hub.lan.crt and hub.lan.key, in the prosody-certs volume.
certificates = "certs"

archive_expires_after = "4w"
default_archive_policy = true

log = { { levels = { min = "info" }; to = "console" } }

VirtualHost "hub.lan"

Component "rooms.hub.lan" "muc"
    name = "Hub rooms (mesh channels are bridged here)"
    modules_enabled = { "muc_mam" }
    muc_room_locking = false
    restrict_room_creation = false
    muc_room_default_persistent = true
    muc_room_default_public = true
    muc_room_default_history_length = 20
    muc_log_by_default = true
    muc_log_presences = false
    muc_log_expires_after = "2w"

Component "mesh.hub.lan"
    -- The first line of the shared secret file (the config is Lua: io is the standard library's).
    component_secret = io.open("/run/secrets/xmpp_secret"):read("*l")

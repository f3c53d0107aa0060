#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/work/seeds/<target>/ (gitignored; `cargo fuzz
cmin` then folds them into fuzz/corpus/<target>/, see fuzz/README.md). Each seed comes from a test vector
of ../shared/reference/meshtastic.md (V1: the c-sharp client's MQTT envelope, default key), the
crates' unit tests, or the repository's own example configs. Run from anywhere."""
import json, os, pathlib, struct

REPO = pathlib.Path(__file__).resolve().parent.parent
HERE = REPO / "fuzz" / "work" / "seeds"


def write(target, name, data):
    d = HERE / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(tag, wire, value):
    key = varint(tag << 3 | wire)
    if wire == 0:
        return key + varint(value)
    if wire == 2:
        return key + varint(len(value)) + value
    if wire == 5:
        return key + struct.pack("<I", value)
    raise ValueError(wire)


# V1 (reference §8): the envelope, its packet and the packet's plaintext Data.
V1_ENVELOPE = bytes.fromhex(
    "0a4b0da46581fa15ffffffff18082a329220d5dfd9c30ec8bc00e37e0b37a2eb3529cbe17fec4fa5c88a6273"
    "1251e3429704598f92a154127a1b239be841a7616beb35da66f1694803580a780312084c6f6e67466173741a"
    "09216661383136356134")
V1_PACKET = V1_ENVELOPE[2:2 + V1_ENVELOPE[1]]
V1_PLAIN = bytes.fromhex(
    "0804122c0a09216661383136356134120f4d65736874617374696320363561341a04363561342206f412fa81"
    "65a4282b1801")


def data(portnum, payload, **extra):
    out = field(1, 0, portnum) + field(2, 2, payload)
    if extra.get("want_response"):
        out += field(3, 0, 1)
    return out


def packet(frm, to, pid, decoded=None, encrypted=None, channel=0, hop_limit=3, hop_start=3,
           want_ack=False, extra=b""):
    out = field(1, 5, frm) + field(2, 5, to)
    if channel:
        out += field(3, 0, channel)
    if decoded is not None:
        out += field(4, 2, decoded)
    if encrypted is not None:
        out += field(5, 2, encrypted)
    out += field(6, 5, pid) + field(9, 0, hop_limit)
    if want_ack:
        out += field(10, 0, 1)
    out += field(15, 0, hop_start)
    return out + extra


TEXT = packet(0xA1B2C3D4, 0xFFFFFFFF, 0x1234, decoded=data(1, b"hi from the mesh"))
DM = packet(0xA1B2C3D4, 0x01020304, 0x99, decoded=data(1, b"direct"), want_ack=True)
# An unknown field (tag 40) that a relay must carry along unchanged.
NEWER = packet(1, 2, 3, encrypted=b"\x00" * 20, channel=8, extra=field(40, 2, b"future"))
NODEINFO = packet(0xFA8165A4, 0xFFFFFFFF, 0x6A, decoded=V1_PLAIN)
PACKETS = {"v1": V1_PACKET, "text": TEXT, "dm": DM, "newer": NEWER, "nodeinfo": NODEINFO}


def envelope(pkt, channel, gateway):
    return field(1, 2, pkt) + field(2, 2, channel.encode()) + field(3, 2, gateway.encode())


def stream_frame(payload):
    return b"\x94\xc3" + struct.pack(">H", len(payload)) + payload


# stream_frame: the first byte is the read size for the piecewise check.
want_config = stream_frame(b"\x18\x2a")
from_radio_packet = stream_frame(field(2, 2, V1_PACKET))  # FromRadio.packet
for name, stream in {
    "want_config": want_config,
    "wake_up": b"\xc3" * 32 + want_config,
    "log_lines": b"INFO  | 12:00:00 booting\r\n" + stream_frame(b"a") + b"DEBUG | x\r\n" + from_radio_packet,
    "oversize": b"\x94\xc3\x02\x01" + stream_frame(b"ok"),
    "truncated": b"\x94\xc3\x00\x06\x01\x02" + stream_frame(b"xy") + stream_frame(b"after"),
    "doubled_start": b"\x94" + stream_frame(b"lost") + stream_frame(b"kept"),
    "empty": stream_frame(b""),
    "full": stream_frame(bytes(range(256)) * 2),
}.items():
    write("stream_frame", name, bytes([3]) + stream)

for name, pkt in PACKETS.items():
    write("packet_decode", name, pkt)
    write("channel_decrypt", name, b"\x01" + pkt)
write("channel_decrypt", "text_no_crypto", b"\x00" + TEXT)
write("channel_decrypt", "text_key_2", b"\x02" + TEXT)

write("envelope", "v1", V1_ENVELOPE)
write("envelope", "text", envelope(TEXT, "LongFast", "!a1b2c3d4"))
write("envelope", "pki", envelope(packet(1, 2, 7, encrypted=b"\x11" * 30), "PKI", "!00000001"))
write("envelope", "other_gateway", envelope(NEWER, "MediumSlow", "gateway-north"))

for i, t in enumerate([
    "msh/2/e/LongFast/!fa8165a4", "msh/EU_868/FR/2/json/mqtt/!aabbccdd", "msh/US/2/e/PKI/!00000001",
    "msh/2/json/LongFast/gateway-north", "msh/2/e/Long Fast/!FA8165A4", "msh/2/c/LongFast/!fa8165a4",
]):
    write("topic", f"t{i}", t)

for i, d in enumerate([
    {"type": "sendtext", "from": 4202784164, "payload": "hi"},
    {"type": "sendtext", "from": 1, "to": 2, "channel": 3, "hopLimit": 7, "sender": "!00000001",
     "payload": "to one node"},
    {"type": "sendposition", "from": 1, "payload": {"latitude_i": 1}},
    {"type": "sendtext", "from": -1, "payload": ""},
]):
    write("mqtt_downlink", f"d{i}", json.dumps(d))
write("mqtt_downlink", "not_object", "[1, 2.5e300, null, \"x\"]")


def peer(kind, body):
    return bytes([kind]) + varint(len(body)) + body


def text(s):
    return bytes([len(s)]) + s.encode()


HELLO = peer(1, bytes([1]) + varint(1) + struct.pack("<I", 2) + varint(1024) + varint(262144)
             + varint(45000) + varint(2) + text("LongFast") + text("PKI"))
DEFINE_CH = peer(2, b"\x00" + varint(0) + text("LongFast"))
DEFINE_ORIGIN = peer(2, b"\x01" + varint(0) + struct.pack("<I", 0xA1B2C3D4))
DATA = peer(3, varint(1) + b"\x33" + varint(0) + varint(0) + varint(len(TEXT)) + TEXT
            + b"\x02" + varint(len(DM)) + DM)
for name, f in {
    "hello": HELLO, "define_channel": DEFINE_CH, "define_origin": DEFINE_ORIGIN, "data": DATA,
    "ack": peer(4, varint(300)), "keepalive": peer(5, b""),
    "close": peer(6, b"\x00" + text("shutting down")), "unknown": peer(0x40, b"later"),
    "stream": HELLO + DEFINE_CH + DEFINE_ORIGIN + DATA,
}.items():
    write("peer_frame", name, f)

# peer_session reads its input as a sequence of choices (arbitrary::Unstructured).
for i, s in enumerate([bytes(64), bytes(range(256)), b"\x05\x00\x10\x03" * 32,
                       DEFINE_CH + DEFINE_ORIGIN + DATA]):
    write("peer_session", f"s{i}", s)

hdr = struct.pack("<II", 0xA1B2C3D4, 0x1234)
write("pki_decrypt", "packet_v1", b"\x00" + V1_PACKET)
write("pki_decrypt", "packet_pki", b"\x00" + packet(1, 2, 7, encrypted=b"\x11" * 30))
write("pki_decrypt", "open", b"\x01" + hdr + b"\x42" * 40)
write("pki_decrypt", "seal", b"\x02" + hdr + struct.pack("<I", 77) + b"\x05" + V1_PLAIN)
write("pki_decrypt", "key", b"\x03" + bytes(range(1, 33)))
write("pki_decrypt", "key_text", b"\x03" + b"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")

NS = "jabber:component:accept"
for i, x in enumerate([
    f"<message xmlns='{NS}' type='groupchat' from='lobby@rooms.hub.lan/Alice' to='bridge@mesh.hub.lan/archipel' id='m1'><body xml:lang='en'>hi</body><delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>",
    f"<presence xmlns='{NS}' from='lobby@rooms.hub.lan/archipel' to='bridge@mesh.hub.lan/archipel'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/><status code='110'/><status code='201'/></x></presence>",
    f"<presence xmlns='{NS}' type='unavailable' from='lobby@rooms.hub.lan/archipel' to='bridge@mesh.hub.lan/archipel'><x xmlns='http://jabber.org/protocol/muc#user'><item role='none'/><status code='307'/><status code='110'/></x></presence>",
    f"<presence xmlns='{NS}' from='lobby@rooms.hub.lan/Alice' to='bridge@mesh.hub.lan/archipel'><x xmlns='http://jabber.org/protocol/muc#user'><item jid='alice@hub.lan/phone' role='participant'/></x></presence>",
    f"<presence xmlns='{NS}' type='error' from='lobby@rooms.hub.lan/Amira' to='!a1b2c3d4@mesh.hub.lan/archipel'><error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
    f"<iq xmlns='{NS}' type='error' id='p1' from='lobby@rooms.hub.lan/archipel'><error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>not in room</text></error></iq>",
    f"<message xmlns='{NS}' type='chat' from='alice@hub.lan/phone' to='!a1b2c3d4@mesh.hub.lan' id='c1'><body>hello</body><request xmlns='urn:xmpp:receipts'/></message>",
    f"<message xmlns='{NS}' type='error' from='lobby@rooms.hub.lan' to='bridge@mesh.hub.lan/archipel' id='m2'><error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
    f"<iq xmlns='{NS}' type='get' id='v1' from='alice@hub.lan/phone' to='!a1b2c3d4@mesh.hub.lan'><vCard xmlns='vcard-temp'/></iq>",
    f"<iq xmlns='{NS}' type='result' id='r1' from='rooms.hub.lan' to='bridge@mesh.hub.lan'/>",
    f"<presence xmlns='{NS}' type='subscribe' from='alice@hub.lan' to='!a1b2c3d4@mesh.hub.lan'/>",
]):
    write("xmpp_stanza", f"x{i}", x)

for p in sorted(REPO.glob("deploy/**/*.toml")):
    rel = p.relative_to(REPO / "deploy")
    write("config_load", str(rel).replace("/", "_"), p.read_bytes())

# The MQTT end-to-end tests' independent reader of what the gateway publishes: see
# `world.rs`. Usage: python3 read_envelopes.py PSK_BASE64 FILE_OF_TOPIC_HEX_LINES
import base64, json, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from meshtastic.protobuf import mesh_pb2, mqtt_pb2, portnums_pb2

# The firmware's default key; a one-byte PSK N is that key with its last byte raised by N-1.
DEFAULT = bytes.fromhex("d4f1bb3a20290759f0bcffabcf4e6901")
psk = base64.b64decode(sys.argv[1])
key = DEFAULT[:-1] + bytes([(DEFAULT[-1] + psk[0] - 1) % 256]) if len(psk) == 1 else psk
for line in open(sys.argv[2]):
    topic, _, payload = line.strip().partition(" ")
    payload = bytes.fromhex(payload)
    if "/2/e/" in topic:
        env = mqtt_pb2.ServiceEnvelope.FromString(payload)
        p = env.packet
        sender = getattr(p, "from")
        nonce = p.id.to_bytes(8, "little") + sender.to_bytes(4, "little") + bytes(4)
        dec = Cipher(algorithms.AES(key), modes.CTR(nonce)).decryptor()
        data = mesh_pb2.Data.FromString(dec.update(p.encrypted) + dec.finalize())
        print("envelope", f"topic={topic}", f"channel_id={env.channel_id}",
              f"gateway_id={env.gateway_id}", f"from=!{sender:08x}", f"id={p.id:#010x}",
              f"variant={p.WhichOneof('payload_variant')}",
              f"port={portnums_pb2.PortNum.Name(data.portnum)}",
              "text=" + json.dumps(data.payload.decode()))
    else:
        j = json.loads(payload)
        print("json", f"topic={topic}", f"from=!{j['from']:08x}", f"id={j['id']:#010x}",
              f"sender={j['sender']}", f"type={j['type']}",
              "text=" + json.dumps(j["payload"]["text"]))

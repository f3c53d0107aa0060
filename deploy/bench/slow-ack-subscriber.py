#!/usr/bin/env python3
# A QoS 1 subscriber (raw MQTT 3.1.1 over a socket, no library) that acknowledges in batches:
# it reads what has arrived, notes how many publishes are unacknowledged, waits 2 ms, and
# acknowledges them all. With a broker that holds its in-flight limit, the most it ever has
# unacknowledged is that limit. Used by mosquitto-inflight.sh.
# Usage: slow-ack-subscriber.py PORT SECONDS clean|persistent  (subscribes to t/#, id slowack-sub)
import socket, struct, sys, time
port = int(sys.argv[1]); secs = float(sys.argv[2]); clean = 0x02 if sys.argv[3] == "clean" else 0x00
def enc_len(n):
    out = b""
    while True:
        b = n % 128; n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n: return out
def s(x): return struct.pack("!H", len(x)) + x
c = socket.create_connection(("127.0.0.1", port))
var = s(b"MQTT") + bytes([4, clean]) + struct.pack("!H", 60)
pl = s(b"slowack-sub")
c.sendall(bytes([0x10]) + enc_len(len(var + pl)) + var + pl)
sub = struct.pack("!H", 1) + s(b"t/#") + bytes([1])
c.sendall(bytes([0x82]) + enc_len(len(sub)) + sub)
c.setblocking(False)
buf = b""; total = 0; most = 0; end = time.time() + secs
while time.time() < end:
    try:
        while True:
            d = c.recv(1 << 20)
            if not d: end = 0; break
            buf += d
    except BlockingIOError:
        pass
    pending = []
    while len(buf) >= 2:
        mult, i, n, ok = 1, 1, 0, False
        while i < len(buf):
            b = buf[i]; n += (b & 127) * mult; mult *= 128; i += 1
            if not b & 128: ok = True; break
        if not ok or len(buf) < i + n: break
        if buf[0] >> 4 == 3 and (buf[0] >> 1) & 3 == 1:
            tlen = struct.unpack("!H", buf[i:i + 2])[0]
            pending.append(buf[i + 2 + tlen:i + 4 + tlen])
        buf = buf[i + n:]
    most = max(most, len(pending)); total += len(pending)
    time.sleep(0.002)
    if pending:
        c.setblocking(True)
        c.sendall(b"".join(b"\x40\x02" + mid for mid in pending))
        c.setblocking(False)
print(f"received {total}, at most {most} unacknowledged at once")

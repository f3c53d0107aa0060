#!/usr/bin/env python3
"""One XMPP user for Archipel's end-to-end tests: a slixmpp client driven over stdin/stdout with
JSON lines by tests/src/xmpp_user.rs, which starts one of these per user and kills it when the
test ends.

    python3 xmpp_user.py --jid alice@hub.lan --host 127.0.0.1 --port 5222 [--resource R]
                         [--timeout S] [--no-auto-receipts]

The password comes in the environment (XMPP_PASSWORD), not on the command line, so it never
shows in a process list.

Protocol, one JSON object per line:
- stdout, first: {"ready": {"jid": FULL_JID}}, or {"fatal": TEXT} and exit status 2.
- stdin: {"call": N, "op": OP, ...arguments}; see the OPS table at the end.
- stdout, one per call: {"reply": N, "ok": RESULT}, {"reply": N, "error": STANZA_ERROR} when the
  other side answered with an error, or {"reply": N, "failure": TEXT} when the call itself
  failed (timeout, bad arguments, not connected).
- stdout, any time: {"event": KIND, ...}: what the user received (see classify()).
- stderr: a transcript, every stanza in and out with a timestamp (SASL exchanges redacted),
  and the driver's own notes.
End of stdin ends the process.

slixmpp refuses plaintext streams and PLAIN/SCRAM over them by default; the test server has no
TLS (loopback only), so both are allowed here explicitly.
"""

import argparse
import asyncio
import json
import os
import re
import sys
import time
import uuid
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout, PresenceError

from xmpp_stanzas import (
    NS_CLIENT, NS_DELAY, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_FORWARD, NS_MAM, NS_MUC_ADMIN,
    NS_MUC_USER, NS_PING, NS_RECEIPTS, NS_RSM, NS_SASL, NS_VCARD, body_of, delay_of, flatten,
    occupant, q, room_message, split_jid, split_tag, stanza_error,
)

# The largest MAM page Prosody serves (its max_archive_query_results default).
MAM_PAGE = 50


def note(text):
    sys.stderr.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {text}\n")
    sys.stderr.flush()


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class User:
    def __init__(self, args, password):
        self.args = args
        self.xmpp = slixmpp.ClientXMPP(
            args.jid if not args.resource else f"{args.jid}/{args.resource}", password
        )
        x = self.xmpp
        # No TLS on the test server (loopback): plaintext, and PLAIN/SCRAM over it.
        x.enable_plaintext = True
        x.enable_starttls = False
        x.enable_direct_tls = False
        x.use_ipv6 = False
        for plugin in ("xep_0030", "xep_0045", "xep_0054", "xep_0199", "xep_0203"):
            x.register_plugin(plugin)
        x.register_plugin("xep_0184", {"auto_ack": not args.no_auto_receipts, "auto_request": False})
        mech = x.plugin["feature_mechanisms"]
        mech.unencrypted_plain = True
        mech.unencrypted_scram = True
        # Occupants per room, to tell joins, changes and leaves apart.
        self.occupants = {}
        # Rooms joined and the nick used, for rejoining after a reconnect.
        self.rooms = {}
        # Ids of IQs sent raw, whose answers become events.
        self.raw_iqs = set()
        # Collectors of MAM results by query id.
        self.mam = {}
        # (predicate, future) pairs waiting for an event.
        self.waiters = []
        self.session = None
        self.connected_once = False
        x.add_filter("in", self.incoming)
        x.add_filter("out", self.outgoing)
        x.add_event_handler("session_start", self.on_session_start)
        x.add_event_handler("failed_all_auth", self.on_failed_auth)
        x.add_event_handler("connection_failed", self.on_connection_failed)
        x.add_event_handler("disconnected", self.on_disconnected)
        x.add_event_handler("stream_error", self.on_stream_error)

    # ---- the transcript and the events ----

    def outgoing(self, stanza):
        ns, _ = split_tag(stanza.xml.tag)
        note("-> <sasl, redacted>" if ns == NS_SASL else f"-> {stanza}")
        return stanza

    def incoming(self, stanza):
        ns, _ = split_tag(stanza.xml.tag)
        note("<- <sasl, redacted>" if ns == NS_SASL else f"<- {stanza}")
        try:
            for event in self.classify(stanza.xml):
                self.publish(event)
        except Exception as e:  # a stanza we cannot read is noted, never fatal
            note(f"!! could not classify a stanza: {e!r}")
        return stanza

    def publish(self, event):
        emit(event)
        for pair in list(self.waiters):
            pick, future = pair
            if not future.done() and pick(event):
                future.set_result(event)
                self.waiters.remove(pair)

    async def wait_event(self, pick, timeout):
        future = asyncio.get_running_loop().create_future()
        pair = (pick, future)
        self.waiters.append(pair)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if pair in self.waiters:
                self.waiters.remove(pair)

    def classify(self, el):
        _, kind = split_tag(el.tag)
        stype = el.get("type") or ""
        if kind == "message":
            return self.classify_message(el, stype)
        if kind == "presence":
            return self.classify_presence(el, stype)
        if kind == "iq" and el.get("id") in self.raw_iqs and stype in ("result", "error"):
            self.raw_iqs.discard(el.get("id"))
            if stype == "error":
                return [{"event": "error", **stanza_error(el, "iq")}]
            return [{"event": "iq_result", "from": el.get("from"), "id": el.get("id"),
                     "xml": ET.tostring(el, encoding="unicode")}]
        return []

    def classify_message(self, el, stype):
        if stype == "error":
            return [{"event": "error", **stanza_error(el, "message")}]
        result = el.find(q(NS_MAM, "result"))
        if result is not None:
            collector = self.mam.get(result.get("queryid"))
            fwd = result.find(q(NS_FORWARD, "forwarded"))
            inner = fwd.find(q(NS_CLIENT, "message")) if fwd is not None else None
            if collector is not None and inner is not None:
                delay = fwd.find(q(NS_DELAY, "delay"))
                stamp = delay.get("stamp") if delay is not None else None
                collector.append(room_message(inner, stamp=stamp or "", archive_id=result.get("id")))
            return []
        events = []
        received = el.find(q(NS_RECEIPTS, "received"))
        if received is not None:
            events.append({"event": "receipt", "from": el.get("from"), "id": received.get("id")})
        body = body_of(el)
        if stype == "groupchat":
            subject = el.find(q(NS_CLIENT, "subject"))
            if body is not None:
                events.append({"event": "groupchat", **room_message(el)})
            elif subject is not None:
                room, _ = split_jid(el.get("from"))
                events.append({"event": "subject", "room": room, "subject": subject.text or ""})
        elif body is not None:
            events.append({
                "event": "chat",
                "from": el.get("from"),
                "body": body,
                "id": el.get("id"),
                "type": stype or "normal",
                "receipt_requested": el.find(q(NS_RECEIPTS, "request")) is not None,
                "delayed": delay_of(el) is not None,
            })
        return events

    def classify_presence(self, el, stype):
        if stype == "error":
            return [{"event": "error", **stanza_error(el, "presence")}]
        if el.find(q(NS_MUC_USER, "x")) is not None:
            occ = occupant(el)
            here = self.occupants.setdefault(occ["room"], set())
            if stype == "unavailable":
                here.discard(occ["nick"])
                if 110 in occ["codes"]:
                    # We are out (left, kicked, room gone): nobody is tracked any more.
                    self.occupants.pop(occ["room"], None)
                    if 303 not in occ["codes"]:
                        self.rooms.pop(occ["room"], None)
                return [{"event": "occupant_left", **occ}]
            if occ["nick"] in here:
                return [{"event": "occupant_changed", **occ}]
            here.add(occ["nick"])
            return [{"event": "occupant_joined", **occ}]
        show = el.find(q(NS_CLIENT, "show"))
        status = el.find(q(NS_CLIENT, "status"))
        return [{
            "event": "presence",
            "from": el.get("from"),
            "type": stype or "available",
            "show": show.text if show is not None else None,
            "status": status.text if status is not None else None,
        }]

    # ---- the session ----

    async def on_session_start(self, _):
        try:
            await self.xmpp.get_roster(timeout=self.args.timeout)
        except (IqError, IqTimeout) as e:
            note(f"!! roster: {e!r}")
        self.xmpp.send_presence()
        self.connected_once = True
        if self.session is not None and not self.session.done():
            self.session.set_result(str(self.xmpp.boundjid))

    def on_failed_auth(self, _):
        self.fail_session(f"authentication failed for {self.args.jid} (wrong password, or not registered?)")

    def on_connection_failed(self, error):
        self.fail_session(f"cannot connect to {self.args.host}:{self.args.port}: {error}")

    def on_stream_error(self, error):
        self.publish({"event": "stream_error", "condition": error["condition"], "text": error["text"] or None})

    def on_disconnected(self, reason):
        self.occupants.clear()
        self.fail_session(f"disconnected before the session started: {reason}")
        if self.connected_once:
            self.publish({"event": "disconnected", "reason": str(reason) if reason else None})

    def fail_session(self, why):
        if self.session is not None and not self.session.done():
            self.session.set_exception(RuntimeError(why))

    async def connect(self):
        self.session = asyncio.get_running_loop().create_future()
        self.xmpp.connect(self.args.host, self.args.port)
        try:
            return await asyncio.wait_for(self.session, self.args.timeout)
        except asyncio.TimeoutError:
            self.xmpp.cancel_connection_attempt()
            raise RuntimeError(f"no session with {self.args.host}:{self.args.port} within {self.args.timeout}s")

    # ---- calls ----

    async def iq(self, to, itype, payload, timeout):
        iq = self.xmpp.make_iq(ito=to, itype=itype)
        iq.append(ET.fromstring(payload) if isinstance(payload, str) else payload)
        return await iq.send(timeout=timeout)

    async def op_join(self, c, timeout):
        room, nick = c["room"], c["nick"]
        history = c.get("history") or {"maxstanzas": 0}
        kwargs = {}
        for key in ("maxstanzas", "seconds", "maxchars"):
            if key in history:
                kwargs[key] = int(history[key])
        try:
            pres, subject, occupants, hist = await self.xmpp.plugin["xep_0045"].join_muc_wait(
                slixmpp.JID(room), nick, timeout=timeout, **kwargs)
        except PresenceError as e:
            return {"error": stanza_error(e.presence.xml, "presence")}
        _, me = split_jid(pres["from"].full)
        self.rooms[room] = me
        return {"ok": {
            "nick": me,
            "codes": occupant(pres.xml)["codes"],
            "occupants": [occupant(p.xml) for p in occupants],
            "history": [room_message(m.xml) for m in hist],
            "subject": subject["subject"] if subject is not None else None,
        }}

    async def op_leave(self, c, timeout):
        room = c["room"]
        nick = self.rooms.get(room)
        if nick is None:
            return {"failure": f"not in {room}"}
        gone = self.wait_event(
            lambda e: e["event"] == "occupant_left" and e["room"] == room and 110 in e["codes"], timeout)
        self.xmpp.plugin["xep_0045"].leave_muc(slixmpp.JID(room), nick)
        await gone
        return {"ok": None}

    async def op_say(self, c, _timeout):
        mid = c.get("id") or f"say-{uuid.uuid4().hex[:12]}"
        msg = self.xmpp.make_message(mto=c["room"], mbody=c["body"], mtype="groupchat")
        msg["id"] = mid
        msg.send()
        return {"ok": mid}

    async def op_chat(self, c, _timeout):
        mid = c.get("id") or f"chat-{uuid.uuid4().hex[:12]}"
        msg = self.xmpp.make_message(mto=c["to"], mbody=c["body"], mtype=c.get("type") or "chat")
        msg["id"] = mid
        if c.get("receipt"):
            msg["request_receipt"] = True
        msg.send()
        return {"ok": mid}

    async def op_mam(self, c, timeout):
        """The room's latest `max` archived messages, oldest first (pages walked backwards)."""
        room, wanted = c["room"], int(c["max"])
        pages, before, got = [], "", 0
        deadline = time.monotonic() + timeout
        while got < wanted:
            qid = f"mam-{uuid.uuid4().hex[:12]}"
            self.mam[qid] = []
            query = ET.Element(q(NS_MAM, "query"), {"queryid": qid})
            rsm = ET.SubElement(query, q(NS_RSM, "set"))
            ET.SubElement(rsm, q(NS_RSM, "max")).text = str(min(MAM_PAGE, wanted - got))
            ET.SubElement(rsm, q(NS_RSM, "before")).text = before or None
            try:
                res = await self.iq(room, "set", query, max(1.0, deadline - time.monotonic()))
            except IqError as e:
                return {"error": stanza_error(e.iq.xml, "iq")}
            finally:
                page = self.mam.pop(qid, [])
            pages.insert(0, page)
            got += len(page)
            fin = res.xml.find(q(NS_MAM, "fin"))
            first = fin.find(f"{q(NS_RSM, 'set')}/{q(NS_RSM, 'first')}") if fin is not None else None
            if not page or fin is None or fin.get("complete") == "true" or first is None:
                break
            before = first.text
        messages = [m for p in pages for m in p]
        return {"ok": messages[-wanted:] if wanted else []}

    async def op_subscribe(self, c, _timeout):
        self.xmpp.send_presence(pto=c["to"], ptype=c.get("type") or "subscribe")
        return {"ok": None}

    async def op_presence(self, c, _timeout):
        self.xmpp.send_presence(pto=c.get("to"), pshow=c.get("show"), pstatus=c.get("status"),
                                ptype=c.get("type"))
        return {"ok": None}

    async def op_roster(self, _c, timeout):
        await self.xmpp.get_roster(timeout=timeout)
        roster = self.xmpp.client_roster
        return {"ok": {jid: {"subscription": roster[jid]["subscription"], "name": roster[jid]["name"]}
                       for jid in roster}}

    async def op_vcard(self, c, timeout):
        try:
            res = await self.iq(c["jid"], "get", f"<vCard xmlns='{NS_VCARD}'/>", timeout)
        except IqError as e:
            return {"error": stanza_error(e.iq.xml, "iq")}
        card = res.xml.find(q(NS_VCARD, "vCard"))
        return {"ok": {"fields": flatten(card) if card is not None else {},
                       "xml": ET.tostring(card, encoding="unicode") if card is not None else ""}}

    async def op_disco_info(self, c, timeout):
        query = ET.Element(q(NS_DISCO_INFO, "query"))
        if c.get("node"):
            query.set("node", c["node"])
        try:
            res = await self.iq(c["jid"], "get", query, timeout)
        except IqError as e:
            return {"error": stanza_error(e.iq.xml, "iq")}
        info = res.xml.find(q(NS_DISCO_INFO, "query"))
        info = info if info is not None else ET.Element("none")
        return {"ok": {
            "identities": [{"category": i.get("category"), "type": i.get("type"), "name": i.get("name")}
                           for i in info.findall(q(NS_DISCO_INFO, "identity"))],
            "features": [f.get("var") for f in info.findall(q(NS_DISCO_INFO, "feature"))],
        }}

    async def op_disco_items(self, c, timeout):
        try:
            res = await self.iq(c["jid"], "get", f"<query xmlns='{NS_DISCO_ITEMS}'/>", timeout)
        except IqError as e:
            return {"error": stanza_error(e.iq.xml, "iq")}
        items = res.xml.find(q(NS_DISCO_ITEMS, "query"))
        items = items if items is not None else ET.Element("none")
        return {"ok": [{"jid": i.get("jid"), "name": i.get("name"), "node": i.get("node")}
                       for i in items.findall(q(NS_DISCO_ITEMS, "item"))]}

    async def op_kick(self, c, timeout):
        query = ET.Element(q(NS_MUC_ADMIN, "query"))
        item = ET.SubElement(query, q(NS_MUC_ADMIN, "item"), {"nick": c["nick"], "role": "none"})
        if c.get("reason"):
            ET.SubElement(item, q(NS_MUC_ADMIN, "reason")).text = c["reason"]
        try:
            await self.iq(c["room"], "set", query, timeout)
        except IqError as e:
            return {"error": stanza_error(e.iq.xml, "iq")}
        return {"ok": None}

    async def op_ping(self, c, timeout):
        started = time.monotonic()
        try:
            await self.iq(c["jid"], "get", f"<ping xmlns='{NS_PING}'/>", timeout)
        except IqError as e:
            return {"error": stanza_error(e.iq.xml, "iq")}
        return {"ok": time.monotonic() - started}

    async def op_raw(self, c, _timeout):
        xml = c["xml"]
        head = re.match(r"\s*<iq\b[^>]*?\bid=(['\"])(.*?)\1", xml)
        if head:
            self.raw_iqs.add(head.group(2))
        note(f"-> (raw) {xml[:2000]}{'...' if len(xml) > 2000 else ''}")
        self.xmpp.send_raw(xml)
        return {"ok": None}

    async def op_reconnect(self, _c, timeout):
        if self.xmpp.transport is not None:
            return {"failure": "still connected"}
        jid = await self.connect()
        rejoined = []
        for room, nick in list(self.rooms.items()):
            try:
                await self.xmpp.plugin["xep_0045"].join_muc_wait(
                    slixmpp.JID(room), nick, maxstanzas=0, timeout=timeout)
                rejoined.append(room)
            except PresenceError as e:
                return {"error": stanza_error(e.presence.xml, "presence")}
        return {"ok": {"jid": jid, "rooms": rejoined}}

    async def op_disconnect(self, _c, timeout):
        self.xmpp.disconnect(wait=timeout)
        await self.xmpp.disconnected
        return {"ok": None}

    async def call(self, c):
        call = c.get("call")
        op = OPS.get(c.get("op"))
        timeout = float(c.get("timeout") or self.args.timeout)
        try:
            if op is None:
                answer = {"failure": f"unknown op {c.get('op')!r}"}
            else:
                answer = await asyncio.wait_for(op(self, c, timeout), timeout + 1)
        except (asyncio.TimeoutError, IqTimeout):
            answer = {"failure": f"{c.get('op')}: no answer within {timeout}s"}
        except KeyError as e:
            answer = {"failure": f"{c.get('op')}: missing argument {e}"}
        except Exception as e:  # reported to the test, which fails with it
            answer = {"failure": f"{c.get('op')}: {e!r}"}
        emit({"reply": call, **answer})


OPS = {
    "join": User.op_join,              # room, nick, history? {maxstanzas|seconds|maxchars}
    "leave": User.op_leave,            # room
    "say": User.op_say,                # room, body, id? -> id
    "chat": User.op_chat,              # to, body, receipt?, type?, id? -> id
    "mam": User.op_mam,                # room, max -> [room message]
    "subscribe": User.op_subscribe,    # to, type? (subscribe|subscribed|unsubscribe|...)
    "presence": User.op_presence,      # to?, show?, status?, type?
    "roster": User.op_roster,          # -> {jid: {subscription, name}}
    "vcard": User.op_vcard,            # jid -> {fields, xml}
    "disco_info": User.op_disco_info,  # jid, node? -> {identities, features}
    "disco_items": User.op_disco_items,  # jid -> [{jid, name, node}]
    "kick": User.op_kick,              # room, nick, reason?
    "ping": User.op_ping,              # jid -> seconds
    "raw": User.op_raw,                # xml
    "reconnect": User.op_reconnect,    # -> {jid, rooms}
    "disconnect": User.op_disconnect,
}


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jid", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--resource", default=None)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--no-auto-receipts", action="store_true")
    args = parser.parse_args()
    password = os.environ.get("XMPP_PASSWORD")
    if password is None:
        emit({"fatal": "XMPP_PASSWORD is not set"})
        sys.exit(2)

    user = User(args, password)
    try:
        jid = await user.connect()
    except RuntimeError as e:
        emit({"fatal": str(e)})
        sys.exit(2)
    emit({"ready": {"jid": jid}})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            command = json.loads(line)
            if not isinstance(command, dict):
                raise ValueError("not an object")
        except ValueError as e:
            emit({"reply": None, "failure": f"bad command line ({e}): {line[:200]!r}"})
            continue
        task = asyncio.ensure_future(user.call(command))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    note("-- standard input closed: leaving")
    if user.xmpp.transport is not None:
        user.xmpp.disconnect(wait=1.0)
        try:
            await asyncio.wait_for(user.xmpp.disconnected, 2.0)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    asyncio.run(main())

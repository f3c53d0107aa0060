"""What tests/python/xmpp_user.py reads out of stanzas: namespaces, and the plain dicts it
prints for room messages, occupants, stanza errors and vCards. Pure functions over ElementTree
elements, no client and no I/O; whatever the far side sends, they return something and never
raise on a missing or malformed attribute.
"""

NS_CLIENT = "jabber:client"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_DELAY = "urn:xmpp:delay"
NS_SID = "urn:xmpp:sid:0"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_MAM = "urn:xmpp:mam:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_XML = "http://www.w3.org/XML/1998/namespace"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_VCARD = "vcard-temp"
NS_PING = "urn:xmpp:ping"

def q(ns, local):
    return f"{{{ns}}}{local}"


def split_tag(tag):
    if tag.startswith("{"):
        ns, local = tag[1:].split("}", 1)
        return ns, local
    return "", tag


def split_jid(text):
    """(bare, resource) without validating: bad input from the far side must not crash us."""
    text = text or ""
    bare, _, resource = text.partition("/")
    return bare, resource


def body_of(el):
    bodies = el.findall(q(NS_CLIENT, "body"))
    if not bodies:
        return None
    for b in bodies:
        if b.get(q(NS_XML, "lang")) in (None, "", "en"):
            return b.text or ""
    return bodies[0].text or ""


def delay_of(el, by=None):
    for d in el.findall(q(NS_DELAY, "delay")):
        if by is None or d.get("from") in (None, by):
            return d.get("stamp")
    return None


def stanza_id_of(el, by):
    for s in el.findall(q(NS_SID, "stanza-id")):
        if s.get("by") == by:
            return s.get("id")
    return None


def stanza_error(el, kind):
    err = el.find(q(NS_CLIENT, "error"))
    condition, text = None, None
    if err is not None:
        for child in err:
            ns, local = split_tag(child.tag)
            if ns != NS_STANZAS:
                continue
            if local == "text":
                text = child.text
            elif condition is None:
                condition = local
    return {
        "kind": kind,
        "from": el.get("from"),
        "id": el.get("id"),
        "type": err.get("type") if err is not None else None,
        "condition": condition or "undefined-condition",
        "text": text,
    }


def room_message(el, stamp=None, archive_id=None):
    room, nick = split_jid(el.get("from"))
    delay = delay_of(el, by=room)
    return {
        "room": room,
        "nick": nick,
        "body": body_of(el) or "",
        "id": el.get("id"),
        "stanza_id": archive_id or stanza_id_of(el, room),
        "delayed": stamp is not None or delay is not None,
        "stamp": stamp or delay,
    }


def occupant(el):
    room, nick = split_jid(el.get("from"))
    x = el.find(q(NS_MUC_USER, "x"))
    item = x.find(q(NS_MUC_USER, "item")) if x is not None else None
    codes = []
    if x is not None:
        for s in x.findall(q(NS_MUC_USER, "status")):
            if (s.get("code") or "").isdigit():
                codes.append(int(s.get("code")))
    reason = item.find(q(NS_MUC_USER, "reason")) if item is not None else None
    show = el.find(q(NS_CLIENT, "show"))
    status = el.find(q(NS_CLIENT, "status"))
    return {
        "room": room,
        "nick": nick,
        "jid": item.get("jid") if item is not None else None,
        "role": item.get("role") if item is not None else None,
        "affiliation": item.get("affiliation") if item is not None else None,
        "new_nick": item.get("nick") if item is not None else None,
        "codes": codes,
        "show": show.text if show is not None else None,
        "status": status.text if status is not None else None,
        "reason": reason.text if reason is not None else None,
    }


def flatten(el, prefix=""):
    """A vCard as {"FN": ..., "N/GIVEN": ...}: each element with text, by its path."""
    out = {}
    for child in el:
        _, local = split_tag(child.tag)
        path = f"{prefix}{local}"
        if len(child):
            out.update(flatten(child, path + "/"))
        elif child.text and child.text.strip():
            out[path] = child.text.strip()
    return out

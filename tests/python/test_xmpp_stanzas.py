"""Unit tests of xmpp_stanzas.py (run by tests/xmpp_harness.rs, or `python3 -m unittest` here):
odd and hostile stanzas read as something, never as an exception."""

import unittest
import xml.etree.ElementTree as ET

from xmpp_stanzas import body_of, flatten, occupant, room_message, split_jid, stanza_error


def parse(text):
    return ET.fromstring(text.replace("<message", "<message xmlns='jabber:client'", 1)
                         .replace("<presence", "<presence xmlns='jabber:client'", 1)
                         .replace("<iq", "<iq xmlns='jabber:client'", 1))


class Stanzas(unittest.TestCase):
    def test_a_room_message_keeps_its_ids_and_history_flag(self):
        el = parse("<message from='lobby@rooms.hub.lan/Amira' id='m1' type='groupchat'>"
                   "<body xml:lang='en'>hi</body>"
                   "<stanza-id xmlns='urn:xmpp:sid:0' by='lobby@rooms.hub.lan' id='s1'/>"
                   "<delay xmlns='urn:xmpp:delay' from='lobby@rooms.hub.lan' stamp='2026-01-01T00:00:00Z'/>"
                   "</message>")
        m = room_message(el)
        self.assertEqual((m["room"], m["nick"], m["body"]), ("lobby@rooms.hub.lan", "Amira", "hi"))
        self.assertEqual((m["id"], m["stanza_id"]), ("m1", "s1"))
        self.assertTrue(m["delayed"])

    def test_a_stanza_id_by_someone_else_is_not_the_rooms(self):
        el = parse("<message from='lobby@rooms.hub.lan/A'><body>x</body>"
                   "<stanza-id xmlns='urn:xmpp:sid:0' by='evil@example' id='forged'/></message>")
        self.assertIsNone(room_message(el)["stanza_id"])

    def test_missing_attributes_and_elements_read_as_empty(self):
        m = room_message(parse("<message/>"))
        self.assertEqual((m["room"], m["nick"], m["body"]), ("", "", ""))
        self.assertIsNone(body_of(parse("<message/>")))
        o = occupant(parse("<presence><x xmlns='http://jabber.org/protocol/muc#user'>"
                           "<status code='x'/><status code='110'/><status/></x></presence>"))
        self.assertEqual(o["codes"], [110])
        self.assertIsNone(o["jid"])
        e = stanza_error(parse("<message type='error'/>"), "message")
        self.assertEqual(e["condition"], "undefined-condition")
        self.assertIsNone(e["type"])

    def test_an_error_reads_its_condition_and_text_whatever_their_order(self):
        e = stanza_error(parse(
            "<message type='error' from='!a1b2c3d4@mesh.hub.lan' id='c1'><error type='modify'>"
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>too long</text>"
            "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "<extra xmlns='urn:example'/></error></message>"), "message")
        self.assertEqual((e["condition"], e["text"], e["type"]), ("not-acceptable", "too long", "modify"))

    def test_jids_split_without_validation(self):
        self.assertEqual(split_jid("a@@b/c/d"), ("a@@b", "c/d"))
        self.assertEqual(split_jid(None), ("", ""))

    def test_a_vcard_flattens_by_path(self):
        card = ET.fromstring("<vCard xmlns='vcard-temp'><FN>Harbour radio A</FN>"
                             "<N><GIVEN>Harbour</GIVEN></N><NICKNAME> HRA </NICKNAME><EMPTY/></vCard>")
        self.assertEqual(flatten(card), {"FN": "Harbour radio A", "N/GIVEN": "Harbour", "NICKNAME": "HRA"})


if __name__ == "__main__":
    unittest.main()

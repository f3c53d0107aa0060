//! An XMPP user for tests: a long-running slixmpp client (`tests/python/xmpp_user.py`, in the
//! venv `tests/run` makes) per user, driven over its standard input and output with JSON lines.
//! A test connects it to a [`Prosody`], joins rooms, speaks, sends direct messages, queries
//! archives, vCards and service discovery, kicks occupants, sends raw stanzas, and waits for
//! typed [`XmppEvent`]s. Every call has a bounded timeout; a call that fails (no answer, the
//! process died) panics with the tail of the client's transcript, while an error the far side
//! answered comes back as a [`StanzaError`] for the test to check. The process is killed when the
//! user is dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::prosody::Prosody;
use crate::{TempDir, temp_dir, workspace};

mod client;
mod events;
use client::Client;
pub use events::{
    ChatMessage, DiscoInfo, DiscoItem, ErrorType, Identity, Joined, Occupant, PresenceUpdate,
    RoomMessage, RosterItem, StanzaError, StanzaKind, VCard, XmppEvent,
};

/// How a user connects.
#[derive(Debug, Clone)]
pub struct UserOptions {
    /// The resource to bind (default: one the server picks).
    pub resource: Option<String>,
    /// Answer receipt requests (XEP-0184) by itself, as Conversations or Gajim do.
    pub auto_receipts: bool,
    /// The bound of every call, connecting included.
    pub timeout: Duration,
    /// Where to write the transcript, kept after the test (default: a temporary file removed
    /// with the user).
    pub transcript: Option<PathBuf>,
}

impl Default for UserOptions {
    fn default() -> Self {
        UserOptions {
            resource: None,
            auto_receipts: true,
            timeout: Duration::from_secs(20),
            transcript: None,
        }
    }
}

/// Which room history a join asks for (XEP-0045 §7.2.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// None (`maxstanzas='0'`): persistent rooms otherwise replay their history on every join.
    None,
    /// The last `n` messages.
    Stanzas(u32),
    /// Messages of the last `n` seconds.
    Seconds(u32),
    /// Whatever the room sends by default (no history element).
    ServerDefault,
}

/// One slixmpp client process.
pub struct XmppUser {
    /// The client process and its pipes; killed on drop.
    client: Client,
    /// Its full JID once bound.
    jid: String,
    /// The server's MUC domain, to complete bare room names.
    muc_domain: String,
    /// The bound of every call.
    timeout: Duration,
    /// Holds the transcript unless it was asked to be kept; removed on drop, after the client.
    _dir: TempDir,
}

impl std::fmt::Debug for XmppUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppUser")
            .field("jid", &self.jid)
            .field("transcript", self.client.transcript_path())
            .finish_non_exhaustive()
    }
}

impl XmppUser {
    /// Connects `user@VHOST` with `password` to `prosody`'s client port and waits for the
    /// session (roster fetched, initial presence sent).
    ///
    /// # Panics
    /// When it cannot connect or log in within 20 s.
    pub fn connect(prosody: &Prosody, user: &str, password: &str) -> XmppUser {
        XmppUser::connect_with(prosody, user, password, UserOptions::default())
    }

    /// [`XmppUser::connect`] with options.
    pub fn connect_with(
        prosody: &Prosody,
        user: &str,
        password: &str,
        options: UserOptions,
    ) -> XmppUser {
        XmppUser::try_connect(prosody, user, password, options)
            .unwrap_or_else(|e| panic!("xmpp user {user}: {e}"))
    }

    /// Connects, or says why it could not (wrong password, server away).
    pub fn try_connect(
        prosody: &Prosody,
        user: &str,
        password: &str,
        options: UserOptions,
    ) -> Result<XmppUser, String> {
        let jid = prosody.jid(user);
        let dir = temp_dir(&format!("xmpp-user-{user}"));
        let transcript = options
            .transcript
            .clone()
            .unwrap_or_else(|| dir.join(format!("{user}.transcript")));
        let mut cmd = Command::new(python());
        cmd.arg(script())
            .args(["--jid", &jid, "--host", "127.0.0.1"])
            .args(["--port", &prosody.c2s_port().to_string()])
            .args(["--timeout", &options.timeout.as_secs_f64().to_string()])
            .env("XMPP_PASSWORD", password)
            // No __pycache__ in the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1");
        if let Some(resource) = &options.resource {
            cmd.args(["--resource", resource]);
        }
        if !options.auto_receipts {
            cmd.arg("--no-auto-receipts");
        }
        let client = Client::spawn(cmd, &jid, transcript)?;
        let mut user = XmppUser {
            client,
            jid,
            muc_domain: prosody.muc_domain().to_owned(),
            timeout: options.timeout,
            _dir: TempDir(dir),
        };
        // The first answer: ready or fatal (events may come before it).
        let deadline = Instant::now() + options.timeout + Duration::from_secs(5);
        let ready = user.client.read_until(deadline, |v| {
            v.get("ready")
                .map(|r| Ok(r["jid"].as_str().unwrap_or_default().to_owned()))
                .or_else(|| {
                    v.get("fatal")
                        .map(|f| Err(f.as_str().unwrap_or("?").to_owned()))
                })
        });
        match ready {
            Ok(Ok(full)) => {
                user.client.rename(&full);
                user.jid = full;
                Ok(user)
            }
            Ok(Err(fatal)) => Err(fatal),
            Err(why) => Err(format!("{why}\n{}", user.client.transcript_tail(30))),
        }
    }

    /// Its full JID (`user@VHOST/resource`).
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Its bare JID.
    pub fn bare_jid(&self) -> &str {
        self.jid.split('/').next().unwrap_or(&self.jid)
    }

    /// `room` as a room JID: as is when it has an `@`, else on the server's MUC service.
    pub fn room_jid(&self, room: &str) -> String {
        if room.contains('@') {
            room.to_owned()
        } else {
            format!("{room}@{}", self.muc_domain)
        }
    }

    /// Joins `room` as `nick` without history and waits for the room's answer.
    ///
    /// # Panics
    /// When the room refuses (see [`XmppUser::try_join`]).
    pub fn join(&self, room: &str, nick: &str) -> Joined {
        self.join_with(room, nick, History::None)
    }

    /// Joins asking for `history` (it comes in [`Joined::history`] and as delayed events).
    pub fn join_with(&self, room: &str, nick: &str, history: History) -> Joined {
        self.try_join(room, nick, history)
            .unwrap_or_else(|e| panic!("{}: joining {room} refused: {e}", self.jid))
    }

    /// Joins, or returns the room's error (e.g. `conflict` for a nick in use).
    pub fn try_join(
        &self,
        room: &str,
        nick: &str,
        history: History,
    ) -> Result<Joined, StanzaError> {
        let history = match history {
            History::None => json!({"maxstanzas": 0}),
            History::Stanzas(n) => json!({"maxstanzas": n}),
            History::Seconds(n) => json!({"seconds": n}),
            History::ServerDefault => json!({}),
        };
        let args = json!({"room": self.room_jid(room), "nick": nick, "history": history});
        self.call("join", args).map(|v| Joined::from_json(&v))
    }

    /// Leaves `room` and waits until the room confirms.
    pub fn leave(&self, room: &str) {
        self.call_ok("leave", json!({"room": self.room_jid(room)}));
    }

    /// Sends `body` to `room` and returns the message's id (the room reflects it with that id).
    pub fn say(&self, room: &str, body: &str) -> String {
        let args = json!({"room": self.room_jid(room), "body": body});
        self.call_ok("say", args)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Sends a chat message to `jid`, asking for a receipt when `receipt`; returns its id.
    pub fn chat(&self, jid: &str, body: &str, receipt: bool) -> String {
        self.send_message(jid, "chat", body, None, receipt)
    }

    /// Sends a message of type `kind` (`chat`, `normal`, `headline`, `groupchat`) with `id`
    /// (a fresh one when `None`); returns the id.
    pub fn send_message(
        &self,
        to: &str,
        kind: &str,
        body: &str,
        id: Option<&str>,
        receipt: bool,
    ) -> String {
        let args = json!({"to": to, "type": kind, "body": body, "id": id, "receipt": receipt});
        self.call_ok("chat", args)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The latest `max` messages of `room`'s archive (XEP-0313), oldest first.
    ///
    /// # Panics
    /// When the room answers with an error (see [`XmppUser::try_mam`]).
    pub fn mam(&self, room: &str, max: usize) -> Vec<RoomMessage> {
        self.try_mam(room, max)
            .unwrap_or_else(|e| panic!("{}: the archive of {room}: {e}", self.jid))
    }

    /// The archive, or the room's error (`item-not-found` for a room that does not exist).
    pub fn try_mam(&self, room: &str, max: usize) -> Result<Vec<RoomMessage>, StanzaError> {
        let args = json!({"room": self.room_jid(room), "max": max});
        self.call("mam", args).map(|v| {
            v.as_array()
                .map(|a| a.iter().map(RoomMessage::from_json).collect())
                .unwrap_or_default()
        })
    }

    /// Asks for `jid`'s presence (a `subscribe` presence); the answers come as events.
    pub fn subscribe(&self, jid: &str) {
        self.presence(Some(jid), Some("subscribe"), None, None);
    }

    /// Sends a presence: to `to` or broadcast, of `kind` (`None`: available), with `show` and
    /// `status`.
    pub fn presence(
        &self,
        to: Option<&str>,
        kind: Option<&str>,
        show: Option<&str>,
        status: Option<&str>,
    ) {
        let args = json!({"to": to, "type": kind, "show": show, "status": status});
        self.call_ok("presence", args);
    }

    /// Its roster as the server has it now.
    pub fn roster(&self) -> BTreeMap<String, RosterItem> {
        let v = self.call_ok("roster", json!({}));
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(jid, item)| (jid.clone(), RosterItem::from_json(item)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `jid`'s vCard (XEP-0054), or the error it answered.
    pub fn vcard(&self, jid: &str) -> Result<VCard, StanzaError> {
        self.call("vcard", json!({"jid": jid}))
            .map(|v| VCard::from_json(&v))
    }

    /// `jid`'s service discovery information (XEP-0030), or the error it answered.
    pub fn disco_info(&self, jid: &str) -> Result<DiscoInfo, StanzaError> {
        self.call("disco_info", json!({"jid": jid}))
            .map(|v| DiscoInfo::from_json(&v))
    }

    /// `jid`'s service discovery items, or the error it answered.
    pub fn disco_items(&self, jid: &str) -> Result<Vec<DiscoItem>, StanzaError> {
        self.call("disco_items", json!({"jid": jid})).map(|v| {
            v.as_array()
                .map(|a| a.iter().map(DiscoItem::from_json).collect())
                .unwrap_or_default()
        })
    }

    /// Kicks `nick` out of `room` (role none; needs a moderator: the room's owner, or a server
    /// admin, see `ProsodyBuilder::admin`), or the room's error.
    pub fn kick(&self, room: &str, nick: &str) -> Result<(), StanzaError> {
        let args = json!({"room": self.room_jid(room), "nick": nick});
        self.call("kick", args).map(|_| ())
    }

    /// Pings `jid` (XEP-0199) and returns the round trip, or the error it answered.
    pub fn ping(&self, jid: &str) -> Result<Duration, StanzaError> {
        self.call("ping", json!({"jid": jid}))
            .map(|v| Duration::from_secs_f64(v.as_f64().unwrap_or_default().max(0.0)))
    }

    /// Writes `xml` on the stream as it is (bad-input tests: oversize, malformed JIDs). Errors
    /// and, for an `<iq>` with an id, results come back as events.
    pub fn raw(&self, xml: &str) {
        self.call_ok("raw", json!({"xml": xml}));
    }

    /// Connects again after the stream ended (a server restart) and rejoins the rooms it was
    /// in, without history; returns those rooms.
    pub fn reconnect(&self) -> Vec<String> {
        let v = self.call_ok("reconnect", json!({}));
        v["rooms"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Closes the stream cleanly (the process stays, for `reconnect`).
    pub fn disconnect(&self) {
        self.call_ok("disconnect", json!({}));
    }

    /// The next event within `limit`, if one came.
    pub fn next_event(&self, limit: Duration) -> Option<XmppEvent> {
        self.client.next_event(limit)
    }

    /// Waits at most `limit` for an event that `pick` accepts, skipping others.
    ///
    /// # Panics
    /// When none came in time, with the events skipped and the transcript's tail.
    pub fn wait_for(&self, limit: Duration, pick: impl FnMut(&XmppEvent) -> bool) -> XmppEvent {
        self.events_until(limit, pick)
            .pop()
            .expect("events_until ends with the event it waited for")
    }

    /// Every event up to and including the first that `is_last` accepts, within `limit` in all.
    pub fn events_until(
        &self,
        limit: Duration,
        mut is_last: impl FnMut(&XmppEvent) -> bool,
    ) -> Vec<XmppEvent> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.next_event(left) else {
                panic!(
                    "{}: the expected event did not come within {:?}; {} other(s) came: {got:#?}\n{}",
                    self.jid,
                    limit,
                    got.len(),
                    self.transcript_tail(30)
                );
            };
            let last = is_last(&event);
            got.push(event);
            if last {
                return got;
            }
        }
    }

    /// The events that arrived so far, without waiting.
    pub fn drain_events(&self) -> Vec<XmppEvent> {
        let mut got = Vec::new();
        while let Some(e) = self.next_event(Duration::ZERO) {
            got.push(e);
        }
        got
    }

    /// Every line the client printed (replies and events), oldest first.
    pub fn seen(&self) -> Vec<String> {
        self.client.seen()
    }

    /// The transcript: every stanza in and out, timestamped, SASL redacted.
    pub fn transcript(&self) -> String {
        self.client.transcript()
    }

    /// The transcript's last `n` lines, each cut at 600 characters, for failure messages.
    pub fn transcript_tail(&self, n: usize) -> String {
        self.client.transcript_tail(n)
    }

    /// A call whose stanza errors are failures of the test.
    fn call_ok(&self, op: &str, args: Value) -> Value {
        self.call(op, args)
            .unwrap_or_else(|e| panic!("{}: {op} answered with an error: {e}", self.jid))
    }

    /// One call, bounded by the user's timeout.
    fn call(&self, op: &str, args: Value) -> Result<Value, StanzaError> {
        self.client.call(op, args, self.timeout)
    }
}

/// The venv's Python (`$ARCHIPEL_VENV` or `.venv` in the workspace), where `tests/run`
/// installs slixmpp.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("ARCHIPEL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv"));
    let python = venv.join("bin").join("python3");
    assert!(
        python.exists(),
        "{} is missing: run `tests/run`, which makes the venv and installs slixmpp",
        python.display()
    );
    python
}

/// `tests/python`, where the client script and its stanza readers live.
pub fn python_dir() -> PathBuf {
    workspace().join("tests").join("python")
}

fn script() -> PathBuf {
    python_dir().join("xmpp_user.py")
}

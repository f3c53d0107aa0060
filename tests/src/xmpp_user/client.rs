//! The client process itself: `xmpp_user.py` started with piped standard input and output and
//! its standard error in the transcript file; calls written as JSON lines, replies matched to
//! them by number, events queued in order. `XmppUser` builds its API on this.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{StanzaError, XmppEvent};

/// What the reader thread hands over.
enum Line {
    /// A JSON object the client printed.
    Json(Value),
    /// A line that is not JSON (it should not happen; kept for the failure message).
    Garbage(String),
}

/// Lines from the client, and events read while waiting for a reply.
struct Inbox {
    /// The reader thread's lines; disconnected when the client exits.
    lines: mpsc::Receiver<Line>,
    /// Events that arrived before the reply a call waited for, in order.
    pending: VecDeque<XmppEvent>,
}

/// One running `xmpp_user.py`.
pub(super) struct Client {
    /// The process; killed and reaped on drop.
    child: Child,
    /// Where calls are written.
    stdin: Mutex<ChildStdin>,
    /// What it printed, to read replies and events from.
    inbox: Mutex<Inbox>,
    /// Every line it printed, for failure messages.
    seen: Arc<Mutex<Vec<String>>>,
    /// Call numbers, so a late reply to a call that timed out is never taken for another's.
    calls: AtomicU64,
    /// Its standard error: the transcript of every stanza in and out.
    transcript: PathBuf,
    /// Who it is, for failure messages.
    who: String,
}

impl Client {
    /// Starts `cmd` with its standard error written to `transcript`.
    pub(super) fn spawn(
        mut cmd: Command,
        who: &str,
        transcript: PathBuf,
    ) -> Result<Client, String> {
        let log = std::fs::File::create(&transcript)
            .map_err(|e| format!("transcript {}: {e}", transcript.display()))?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("the xmpp user client does not start: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                record.lock().expect("seen").push(line.clone());
                let parsed = serde_json::from_str(&line).map_or(Line::Garbage(line), Line::Json);
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        Ok(Client {
            child,
            stdin: Mutex::new(stdin),
            inbox: Mutex::new(Inbox {
                lines,
                pending: VecDeque::new(),
            }),
            seen,
            calls: AtomicU64::new(1),
            transcript,
            who: who.to_owned(),
        })
    }

    /// Names it in failure messages from now on (its full JID once bound).
    pub(super) fn rename(&mut self, who: &str) {
        self.who = who.to_owned();
    }

    /// Sends one call and waits for its reply: the result, or the stanza error the far side
    /// answered. Panics when the call failed or no reply came in time.
    pub(super) fn call(
        &self,
        op: &str,
        mut args: Value,
        timeout: Duration,
    ) -> Result<Value, StanzaError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        args["call"] = json!(n);
        args["op"] = json!(op);
        args["timeout"] = json!(timeout.as_secs_f64());
        {
            let mut stdin = self.stdin.lock().expect("stdin");
            let line = args.to_string() + "\n";
            if let Err(e) = stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
            {
                panic!(
                    "{}: {op}: the client does not take calls ({e})\n{}",
                    self.who,
                    self.transcript_tail(30)
                );
            }
        }
        // The client bounds the call by `timeout`; the margin covers its own shutdown of it.
        let deadline = Instant::now() + timeout + Duration::from_secs(5);
        let reply = self.read_until(deadline, |v| {
            (v.get("reply").and_then(Value::as_u64) == Some(n)).then(|| v.clone())
        });
        let reply = reply.unwrap_or_else(|why| {
            panic!("{}: {op}: {why}\n{}", self.who, self.transcript_tail(30))
        });
        if let Some(failure) = reply.get("failure") {
            panic!(
                "{}: {op} failed: {}\n{}",
                self.who,
                failure.as_str().unwrap_or("?"),
                self.transcript_tail(30)
            );
        }
        match reply.get("error") {
            Some(e) => Err(StanzaError::from_json(e)),
            None => Ok(reply.get("ok").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Reads lines until `pick` returns something, keeping the events met on the way for
    /// `next_event`.
    pub(super) fn read_until<T>(
        &self,
        deadline: Instant,
        mut pick: impl FnMut(&Value) -> Option<T>,
    ) -> Result<T, String> {
        let mut inbox = self.inbox.lock().expect("inbox");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match inbox.lines.recv_timeout(left) {
                Ok(Line::Json(v)) => {
                    if let Some(t) = pick(&v) {
                        return Ok(t);
                    }
                    if v.get("event").is_some() {
                        inbox.pending.push_back(XmppEvent::from_json(&v));
                    }
                }
                Ok(Line::Garbage(line)) => {
                    return Err(format!("the client printed something not JSON: {line}"));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return Err("no answer in time".into()),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("the client exited".into());
                }
            }
        }
    }

    /// The next event within `limit`, if one came.
    pub(super) fn next_event(&self, limit: Duration) -> Option<XmppEvent> {
        let deadline = Instant::now() + limit;
        let mut inbox = self.inbox.lock().expect("inbox");
        if let Some(e) = inbox.pending.pop_front() {
            return Some(e);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match inbox.lines.recv_timeout(left) {
                Ok(Line::Json(v)) if v.get("event").is_some() => {
                    return Some(XmppEvent::from_json(&v));
                }
                // A late reply to a call that timed out, or garbage: in `seen` for the record.
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    drop(inbox);
                    panic!(
                        "{}: the client exited\n{}",
                        self.who,
                        self.transcript_tail(30)
                    );
                }
            }
        }
    }

    /// Every line it printed, oldest first.
    pub(super) fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("seen").clone()
    }

    /// The transcript file's path.
    pub(super) fn transcript_path(&self) -> &PathBuf {
        &self.transcript
    }

    /// The transcript so far.
    pub(super) fn transcript(&self) -> String {
        std::fs::read_to_string(&self.transcript).unwrap_or_default()
    }

    /// The transcript's last `n` lines, each cut at 600 characters.
    pub(super) fn transcript_tail(&self, n: usize) -> String {
        let text = self.transcript();
        let lines: Vec<&str> = text.lines().collect();
        let tail: Vec<String> = lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.chars().take(600).collect())
            .collect();
        format!(
            "transcript of {} ({}):\n{}",
            self.who,
            self.transcript.display(),
            tail.join("\n")
        )
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

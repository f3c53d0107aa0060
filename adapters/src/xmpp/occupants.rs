//! Where one of our occupants stands in a room (the bridge, or a node speaking as
//! `local@domain`), and the nick it uses. No I/O.
//!
//! | state      | entered by                                  | leaves on                                   |
//! |------------|---------------------------------------------|---------------------------------------------|
//! | `Absent`   | start, stream lost, a join refused          | a join sent → `Joining`                     |
//! | `Joining`  | join presence sent                          | self-presence → `Joined`; conflict → `Joining` with the next nick; error → `Absent`/`Retry` |
//! | `Joined`   | the room's self-presence (status 110)       | unavailable (kick, shutdown) → `Retry`; stream lost → `Absent` |
//! | `Retry`    | dropped by the room, a refused bridge join  | its time → `Joining`                        |

use std::time::Instant;

/// How many nicks (`nick`, `nick (2)`, … ) a join tries before it gives up.
pub(crate) const MAX_NICK_ATTEMPTS: u32 = 20;

/// Where an occupant is in its room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinState {
    /// Not in the room, and nothing sent.
    Absent,
    /// A join presence went out for `nick`; the room has not answered yet.
    Joining {
        /// When it went out (a join unanswered for long is given up).
        since: Instant,
        /// The nick asked for.
        nick: String,
    },
    /// In the room as `nick`.
    Joined {
        /// The nick the room gave (the room may rewrite the one asked for).
        nick: String,
    },
    /// Dropped or refused: join again at `at`.
    Retry {
        /// When to join again.
        at: Instant,
    },
}

impl JoinState {
    /// The nick it has in the room, if it is in.
    pub(crate) fn joined_nick(&self) -> Option<&str> {
        match self {
            JoinState::Joined { nick } => Some(nick),
            _ => None,
        }
    }

    /// The nick it has or asked for.
    pub(crate) fn nick(&self) -> Option<&str> {
        match self {
            JoinState::Joined { nick } | JoinState::Joining { nick, .. } => Some(nick),
            _ => None,
        }
    }
}

/// `base` for the first attempt, then `base (2)`, `base (3)`, …
pub(crate) fn nick_for(base: &str, attempt: u32) -> String {
    if attempt == 0 {
        base.to_owned()
    } else {
        format!("{base} ({})", attempt + 1)
    }
}

/// One of our occupants in one room.
#[derive(Debug)]
pub(crate) struct Occupant<W> {
    /// The nick the owner wants; conflicts add ` (2)`, ` (3)`…
    pub(crate) base: String,
    /// Conflicts met for `base` so far: the next join asks for `nick_for(base, attempt)`,
    /// and a re-join after a reconnect keeps the nick that worked.
    pub(crate) attempt: u32,
    /// Where it is.
    pub(crate) state: JoinState,
    /// Messages that wait for the join to finish, in order, with their waiters.
    pub(crate) waiting: Vec<(String, W)>,
}

impl<W> Occupant<W> {
    /// Not joined yet, wanting `base`.
    pub(crate) fn new(base: &str) -> Occupant<W> {
        Occupant {
            base: base.to_owned(),
            attempt: 0,
            state: JoinState::Absent,
            waiting: Vec::new(),
        }
    }

    /// The nick the next join asks for.
    pub(crate) fn next_nick(&self) -> String {
        nick_for(&self.base, self.attempt)
    }

    /// Starts a join at `now`; the nick to ask for.
    pub(crate) fn start_join(&mut self, now: Instant) -> String {
        let nick = self.next_nick();
        self.state = JoinState::Joining {
            since: now,
            nick: nick.clone(),
        };
        nick
    }

    /// The room said the nick is taken: the next nick, or `None` when out of attempts.
    pub(crate) fn conflict(&mut self, now: Instant) -> Option<String> {
        if self.attempt + 1 >= MAX_NICK_ATTEMPTS {
            self.state = JoinState::Absent;
            self.attempt = 0;
            return None;
        }
        self.attempt += 1;
        Some(self.start_join(now))
    }

    /// The owner asks for another nick: start again from it.
    pub(crate) fn rename(&mut self, base: &str) {
        self.base = base.to_owned();
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_conflicts_count_up_from_two() {
        assert_eq!(nick_for("Amira", 0), "Amira");
        assert_eq!(nick_for("Amira", 1), "Amira (2)");
        assert_eq!(nick_for("Amira", 2), "Amira (3)");
    }

    #[test]
    fn a_conflict_asks_for_the_next_nick_until_attempts_run_out() {
        let now = Instant::now();
        let mut o: Occupant<()> = Occupant::new("Amira");
        assert_eq!(o.start_join(now), "Amira");
        assert_eq!(o.conflict(now).as_deref(), Some("Amira (2)"));
        assert_eq!(o.state.nick(), Some("Amira (2)"));
        for _ in 2..MAX_NICK_ATTEMPTS {
            o.conflict(now);
        }
        assert_eq!(o.conflict(now), None);
        assert_eq!(o.state, JoinState::Absent);
    }

    #[test]
    fn a_rename_starts_again_from_the_new_nick() {
        let now = Instant::now();
        let mut o: Occupant<()> = Occupant::new("Amira");
        o.start_join(now);
        o.conflict(now);
        o.rename("Bo");
        assert_eq!(o.next_nick(), "Bo");
    }
}

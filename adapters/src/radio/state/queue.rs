//! What the session knows of the radio's transmit queue, from its `QueueStatus` messages, and
//! which of those messages answer our heartbeats.
//!
//! A `QueueStatus` without a packet id is either the answer to a heartbeat or one the firmware
//! sends by itself: `MeshService::loop` sends one when its queue has room again after the last
//! status it queued for the phone said `free = 0`, and, since that "last status" starts out
//! with `free = 0`, once after boot. (Heartbeat answers are built in `PhoneAPI::getFromRadio`
//! and do not count as "last status"; packet statuses and the self-sent ones go through one
//! FIFO, `toPhoneQueueStatusQueue`, which heartbeat answers jump.) On the wire the two look
//! alike, and a relayed packet is confirmed by the answer to the heartbeat written after it,
//! so taking a self-sent status for that answer would confirm a relay the radio has not read.
//! Hence, here:
//!
//! - answers are never counted beyond the heartbeats written;
//! - a self-sent status is *expected* from connect (one from boot may be waiting) and after a
//!   packet's status said `free = 0`; a packet's status with room means none is coming (the
//!   FIFO would have delivered it first);
//! - while one is expected, relays wait: until a status arrives with no heartbeat outstanding
//!   (that one is it), or until a grace period after the radio was seen to have room (the
//!   firmware sends it within milliseconds of the room appearing; past the grace it was lost);
//! - at most one heartbeat is unanswered at a time: the firmware notes a heartbeat in one flag
//!   (`heartbeatReceived`) and reads everything waiting before it writes, so two heartbeats
//!   read together get one answer, and counting would be off for the rest of the connection;
//!   an answer that never comes is given up after a timeout.

use std::time::{Duration, Instant};

use mesh_core::proto;

/// Whether a self-sent `QueueStatus` may still arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stray {
    /// None is coming.
    Settled,
    /// One may come; the radio has not been seen with room yet.
    Expected,
    /// One may come, and the radio has had room since this moment.
    ExpectedRoomSince(Instant),
}

/// The radio's transmit queue and the heartbeat answers, on one connection. See the module doc.
#[derive(Debug)]
pub(super) struct QueueWatch {
    /// Free slots from the last `QueueStatus`; `None` until one came on this connection.
    free: Option<u32>,
    /// Heartbeats written on this connection.
    written: u64,
    /// Heartbeat answers counted; never more than `written`.
    answered: u64,
    /// When the unanswered heartbeat was written, if one is.
    unanswered_since: Option<Instant>,
    /// Whether a self-sent status may still come, which makes answers ambiguous.
    stray: Stray,
}

impl QueueWatch {
    /// The state of a fresh connection: nothing known, a status from boot possibly waiting.
    pub(super) fn new() -> QueueWatch {
        QueueWatch {
            free: None,
            written: 0,
            answered: 0,
            unanswered_since: None,
            stray: Stray::Expected,
        }
    }

    /// The radio said its queue is full.
    pub(super) fn is_full(&self) -> bool {
        self.free == Some(0)
    }

    /// A heartbeat was written; returns its number on this connection.
    pub(super) fn heartbeat_written(&mut self, now: Instant) -> u64 {
        self.unanswered_since.get_or_insert(now);
        self.written += 1;
        self.written
    }

    /// Heartbeat answers received so far (in order: answer `n` means heartbeats 1..=n were
    /// read by the radio, with everything written before them).
    pub(super) fn answered(&self) -> u64 {
        self.answered
    }

    /// A heartbeat is written and not yet answered.
    pub(super) fn outstanding(&self) -> bool {
        self.written > self.answered
    }

    /// Whether a self-sent status may still come.
    pub(super) fn expects_stray(&self) -> bool {
        self.stray != Stray::Settled
    }

    /// Takes one `QueueStatus`.
    pub(super) fn on_status(&mut self, qs: &proto::QueueStatus, now: Instant) {
        self.free = Some(qs.free);
        if qs.mesh_packet_id != 0 {
            self.stray = if qs.free == 0 {
                Stray::Expected
            } else {
                Stray::Settled
            };
            return;
        }
        if self.outstanding() {
            self.answered += 1;
            if !self.outstanding() {
                self.unanswered_since = None;
            }
            if self.stray == Stray::Expected && qs.free > 0 {
                self.stray = Stray::ExpectedRoomSince(now);
            }
        } else {
            // No answer is due: this is the self-sent one.
            self.stray = Stray::Settled;
        }
    }

    /// Whether a relay may be written now: the queue has room, no heartbeat is unanswered
    /// (its own heartbeat would be a second one), and no self-sent status can be taken for its
    /// heartbeat's answer.
    pub(super) fn may_relay(&mut self, now: Instant, grace: Duration) -> bool {
        if let Stray::ExpectedRoomSince(since) = self.stray
            && now.saturating_duration_since(since) >= grace
        {
            self.stray = Stray::Settled;
        }
        !self.is_full() && !self.outstanding() && self.stray == Stray::Settled
    }

    /// Gives up on answers older than `timeout`: the radio missed or merged those heartbeats.
    pub(super) fn forget_unanswered(&mut self, now: Instant, timeout: Duration) {
        if self
            .unanswered_since
            .is_some_and(|since| now.saturating_duration_since(since) >= timeout)
        {
            self.answered = self.written;
            self.unanswered_since = None;
        }
    }

    /// When an unanswered heartbeat is given up, if one is.
    pub(super) fn unanswered_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.unanswered_since.map(|since| since + timeout)
    }

    /// When the grace for a self-sent status runs out, if it is running.
    pub(super) fn grace_deadline(&self, grace: Duration) -> Option<Instant> {
        match self.stray {
            Stray::ExpectedRoomSince(since) => Some(since + grace),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(1);

    fn status(free: u32, id: u32) -> proto::QueueStatus {
        proto::QueueStatus {
            res: 0,
            free,
            maxlen: 16,
            mesh_packet_id: id,
        }
    }

    #[test]
    fn answers_are_never_counted_beyond_the_heartbeats_written() {
        let t = Instant::now();
        let mut w = QueueWatch::new();
        w.on_status(&status(16, 0), t);
        assert_eq!(w.answered(), 0, "the status from boot answers nothing");
        assert!(!w.expects_stray());
        w.heartbeat_written(t);
        w.on_status(&status(16, 0), t);
        w.on_status(&status(16, 0), t);
        assert_eq!(w.answered(), 1);
        assert!(!w.outstanding());
    }

    #[test]
    fn a_full_packet_status_makes_relays_wait_for_the_self_sent_one() {
        let t = Instant::now();
        let mut w = QueueWatch::new();
        w.on_status(&status(16, 0), t);
        w.on_status(&status(0, 77), t);
        assert!(w.is_full() && w.expects_stray());
        // The radio frees a slot and says so by itself: relays may go again.
        w.on_status(&status(1, 0), t);
        assert!(w.may_relay(t, GRACE));
    }

    #[test]
    fn with_a_heartbeat_outstanding_both_statuses_must_arrive() {
        let t = Instant::now();
        let mut w = QueueWatch::new();
        w.on_status(&status(0, 5), t);
        w.heartbeat_written(t);
        // One status: the answer or the self-sent one, no telling which.
        w.on_status(&status(3, 0), t);
        assert!(!w.may_relay(t, GRACE));
        assert_eq!(w.grace_deadline(GRACE), Some(t + GRACE));
        // The second settles it.
        w.on_status(&status(3, 0), t);
        assert!(w.may_relay(t, GRACE));
    }

    #[test]
    fn a_self_sent_status_that_never_comes_is_given_up_after_the_grace() {
        let t = Instant::now();
        let mut w = QueueWatch::new();
        w.heartbeat_written(t);
        w.on_status(&status(16, 0), t);
        assert!(!w.may_relay(t + GRACE / 2, GRACE));
        assert!(w.may_relay(t + GRACE, GRACE));
        assert_eq!(w.grace_deadline(GRACE), None);
    }

    #[test]
    fn no_relay_goes_while_a_heartbeat_is_unanswered_and_a_lost_answer_is_given_up() {
        let t = Instant::now();
        let mut w = QueueWatch::new();
        w.on_status(&status(16, 0), t);
        w.heartbeat_written(t);
        assert!(
            !w.may_relay(t, GRACE),
            "its heartbeat would be a second one"
        );
        assert_eq!(w.unanswered_deadline(GRACE * 10), Some(t + GRACE * 10));
        w.forget_unanswered(t + GRACE, GRACE * 10);
        assert!(w.outstanding());
        w.forget_unanswered(t + GRACE * 10, GRACE * 10);
        assert!(!w.outstanding() && w.may_relay(t + GRACE * 10, GRACE));
        // A late answer counts for nothing.
        w.on_status(&status(16, 0), t + GRACE * 11);
        assert_eq!(w.answered(), 1);
    }

    #[test]
    fn a_packet_status_with_room_means_nothing_more_is_coming() {
        let t = Instant::now();
        let mut w = QueueWatch::new();
        w.on_status(&status(0, 5), t);
        w.on_status(&status(4, 6), t);
        assert!(w.may_relay(t, GRACE));
        assert_eq!(w.free, Some(4));
    }
}

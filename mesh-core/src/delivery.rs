//! What a destination says about one delivery attempt.
//!
//! Adapters report it; only the gateway's outbox acts on it (deletes, retries or dead-letters a
//! row). The rule that keeps store-and-forward honest: an adapter reports [`Delivered`] only once
//! the far side has confirmed it holds the message.
//!
//! The three ways of not delivering differ in what the outbox does next:
//!
//! | status          | meaning                                          | the row                                  |
//! |-----------------|--------------------------------------------------|------------------------------------------|
//! | [`Unreachable`] | the far side was not reached (link down, its queue full, away, a set-up to fix) | waits; the attempt is not counted |
//! | [`Failed`]      | the far side was reached and did not take it this time (a NAK, no ACK) | retried later; counts toward the limit |
//! | [`Rejected`]    | the far side refused it and will refuse it again | set aside at once                        |
//!
//! A link that flaps a hundred times therefore never dead-letters what waits for it.
//!
//! [`Delivered`]: DeliveryStatus::Delivered
//! [`Unreachable`]: DeliveryStatus::Unreachable
//! [`Failed`]: DeliveryStatus::Failed
//! [`Rejected`]: DeliveryStatus::Rejected

use std::fmt;

/// The outcome of one attempt to hand a message to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// The far side confirmed it has the message (for a radio: accepted into its queue and,
    /// when an ACK was asked for, acknowledged by the mesh; for MQTT: the broker's PUBACK).
    Delivered,
    /// The far side could not be reached: the message waits for it, and the attempt does not
    /// count toward the destination's attempt limit.
    Unreachable {
        /// What is in the way, for logs and the operator.
        reason: String,
    },
    /// The far side was reached and did not take the message this time (a NAK, no ACK in
    /// time): tried again later, and counted.
    Failed {
        /// What went wrong, for logs and the operator.
        reason: String,
    },
    /// The far side refused the message and will refuse it again (too large, no such channel).
    Rejected {
        /// What the far side objected to.
        reason: String,
    },
}

impl DeliveryStatus {
    /// The destination is away, with what is in the way.
    pub fn unreachable(reason: impl Into<String>) -> Self {
        DeliveryStatus::Unreachable {
            reason: reason.into(),
        }
    }

    /// A counted failure with its reason.
    pub fn failed(reason: impl Into<String>) -> Self {
        DeliveryStatus::Failed {
            reason: reason.into(),
        }
    }

    /// A rejection with its reason.
    pub fn rejected(reason: impl Into<String>) -> Self {
        DeliveryStatus::Rejected {
            reason: reason.into(),
        }
    }

    /// True only for a confirmed delivery.
    pub fn is_delivered(&self) -> bool {
        matches!(self, DeliveryStatus::Delivered)
    }

    /// The reason of a status other than [`DeliveryStatus::Delivered`].
    pub fn reason(&self) -> Option<&str> {
        match self {
            DeliveryStatus::Delivered => None,
            DeliveryStatus::Unreachable { reason }
            | DeliveryStatus::Failed { reason }
            | DeliveryStatus::Rejected { reason } => Some(reason),
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryStatus::Delivered => f.write_str("delivered"),
            DeliveryStatus::Unreachable { reason } => write!(f, "waiting: {reason}"),
            DeliveryStatus::Failed { reason } => write!(f, "not delivered, will retry: {reason}"),
            DeliveryStatus::Rejected { reason } => write!(f, "rejected: {reason}"),
        }
    }
}

//! What a destination says about one delivery attempt.
//!
//! Adapters report it; only the gateway's outbox acts on it (deletes, retries or dead-letters a
//! row). The rule that keeps store-and-forward honest: an adapter reports [`Delivered`] only once
//! the far side has confirmed it holds the message.
//!
//! [`Delivered`]: DeliveryStatus::Delivered

use std::fmt;

/// The outcome of one attempt to hand a message to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// The far side confirmed it has the message (for a radio: accepted into its queue and,
    /// when an ACK was asked for, acknowledged by the mesh).
    Delivered,
    /// Not delivered this time, for a reason that may pass (link down, queue full, no ACK yet).
    Retry {
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
    /// A retry with its reason.
    pub fn retry(reason: impl Into<String>) -> Self {
        DeliveryStatus::Retry {
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
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryStatus::Delivered => f.write_str("delivered"),
            DeliveryStatus::Retry { reason } => write!(f, "not delivered, will retry: {reason}"),
            DeliveryStatus::Rejected { reason } => write!(f, "rejected: {reason}"),
        }
    }
}

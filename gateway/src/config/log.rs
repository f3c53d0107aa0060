//! `[log]`: what the activity feed (standard output, so the journal) and the status page show
//! of the messages that cross.

use serde::Deserialize;

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Show what direct messages say. Off by default: a direct message (to one node, PKI or
    /// not) is shown as `direct message (N bytes, content hidden)`, so the journal and the
    /// status page tell that one crossed without keeping what a person wrote to another.
    pub show_direct_messages: bool,
}

impl LogSection {
    /// How direct messages are shown, for the start summary.
    pub fn summary(&self) -> &'static str {
        if self.show_direct_messages {
            "direct messages shown with their text ([log] show_direct_messages = true)"
        } else {
            "direct messages shown without their text (set [log] show_direct_messages = true to see it)"
        }
    }
}

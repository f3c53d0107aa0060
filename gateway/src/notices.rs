//! Which ingress drops the terminal shows. A drop loses a message, so the operator must see it
//! on stdout; but a flood (a sender at 1,000 msg/s, a spoofing node) must not bury every other
//! line. The first drop of each (endpoint, reason) between two summaries is shown as it
//! happens; the rest are counted and told once, with the summary.

use std::collections::BTreeMap;

use mesh_core::NodeId;

/// Drops seen since the last summary, by (endpoint, reason).
#[derive(Debug, Default)]
pub struct DropNotices {
    /// How many drops of each key were not shown (the first of each was).
    held: BTreeMap<(String, &'static str), u64>,
}

impl DropNotices {
    /// A drop by `source` for `reason`: the line to show now, or `None` when one of the same
    /// kind was already shown since the last summary.
    pub fn on_drop(
        &mut self,
        source: &str,
        reason: &'static str,
        from: Option<NodeId>,
    ) -> Option<String> {
        let key = (source.to_owned(), reason);
        if let Some(n) = self.held.get_mut(&key) {
            *n += 1;
            return None;
        }
        self.held.insert(key, 0);
        let from = from.map(|f| format!(" from {f}")).unwrap_or_default();
        Some(format!(
            "dropped a packet{from} heard on {source}: {reason} (more like it are counted in the summary)"
        ))
    }

    /// The drops not shown since the last summary, one line per kind, and a fresh start.
    pub fn summary(&mut self) -> Vec<String> {
        std::mem::take(&mut self.held)
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((source, reason), n)| format!("dropped {n} more heard on {source}: {reason}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_drop_of_a_kind_is_shown_and_the_rest_are_told_with_the_summary() {
        let mut n = DropNotices::default();
        let first = n.on_drop("north", "spoofed", Some(NodeId::new(0xa1b2_c3d4)));
        assert!(first.unwrap().contains("!a1b2c3d4 heard on north: spoofed"));
        for _ in 0..999 {
            assert_eq!(n.on_drop("north", "spoofed", Some(NodeId::new(1))), None);
        }
        // Another reason or endpoint is news.
        assert!(n.on_drop("north", "rate-limited", None).is_some());
        assert!(n.on_drop("mqtt", "spoofed", None).is_some());
        assert_eq!(
            n.summary(),
            vec!["dropped 999 more heard on north: spoofed"]
        );
        // After a summary, the next drop is shown again.
        assert!(n.on_drop("north", "spoofed", None).is_some());
        assert!(n.summary().is_empty());
    }
}

//! The rule for two gateways that both dial: each may end up with two authenticated
//! connections to the other (one it opened, one it accepted), and both must keep the same one
//! without talking about it. A pure function of the two keys and the connections' directions.
//!
//! A connection closed by this rule may already have carried a few frames; the peer protocol
//! resumes from the last acknowledged message on the kept one, so nothing is lost and the
//! receiver's seen-set absorbs any repeat.

use super::key::PeerKey;

/// Which side opened a connection, as seen from this gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This gateway dialled.
    Outbound,
    /// The peer dialled this gateway's listener.
    Inbound,
}

/// What to do with a newly authenticated connection to a peer, given the one already open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duplicate {
    /// No other connection: keep the new one.
    Keep,
    /// Keep the new connection and close the existing one.
    Replace,
    /// Close the new connection, keep the existing one.
    CloseNew,
}

/// The rule two gateways both apply so they keep the same one connection between them:
/// - none open yet: keep the new one;
/// - the new connection was opened in the same direction as the existing one: the dialler
///   gave up on its old connection (a dialler never dials a peer it is connected to), so the
///   new one replaces it; this also clears a half-open connection the other side has not
///   noticed yet;
/// - opposite directions (both dialled): the connection initiated by the gateway with the
///   smaller public key (bytewise) wins, whichever finished its handshake first.
///
/// Equal keys cannot meet ([`super::connect`] and the listener refuse their own key); they are
/// treated as if ours were the larger, so the function stays total.
pub fn resolve_duplicate(
    ours: PeerKey,
    theirs: PeerKey,
    existing: Option<Direction>,
    new: Direction,
) -> Duplicate {
    let winner = if ours < theirs {
        Direction::Outbound
    } else {
        Direction::Inbound
    };
    match existing {
        None => Duplicate::Keep,
        Some(existing) if existing == new || new == winner => Duplicate::Replace,
        Some(_) => Duplicate::CloseNew,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Inbound, Outbound};
    use Duplicate::{CloseNew, Keep, Replace};

    const SMALL: PeerKey = PeerKey::from_bytes([1; 32]);
    const LARGE: PeerKey = PeerKey::from_bytes([2; 32]);

    #[test]
    fn a_first_connection_is_kept_whichever_its_direction() {
        for (ours, theirs) in [(SMALL, LARGE), (LARGE, SMALL)] {
            for new in [Outbound, Inbound] {
                assert_eq!(resolve_duplicate(ours, theirs, None, new), Keep);
            }
        }
    }

    #[test]
    fn when_both_dial_the_connection_from_the_smaller_key_wins_on_both_sides() {
        // Seen from the smaller key: its outbound connection wins, in either order.
        assert_eq!(
            resolve_duplicate(SMALL, LARGE, Some(Inbound), Outbound),
            Replace
        );
        assert_eq!(
            resolve_duplicate(SMALL, LARGE, Some(Outbound), Inbound),
            CloseNew
        );
        // Seen from the larger key: its inbound connection (the smaller key's outbound) wins.
        assert_eq!(
            resolve_duplicate(LARGE, SMALL, Some(Outbound), Inbound),
            Replace
        );
        assert_eq!(
            resolve_duplicate(LARGE, SMALL, Some(Inbound), Outbound),
            CloseNew
        );
    }

    #[test]
    fn every_order_of_arrival_leaves_both_sides_with_the_same_connection() {
        // Connection 1 is opened by SMALL, connection 2 by LARGE. Each side sees both, in
        // either order; whatever the orders, both keep connection 1.
        let keep = |ours, theirs, arrivals: [(u8, Direction); 2]| {
            let mut kept: Option<(u8, Direction)> = None;
            for (id, direction) in arrivals {
                match resolve_duplicate(ours, theirs, kept.map(|(_, d)| d), direction) {
                    Keep | Replace => kept = Some((id, direction)),
                    CloseNew => {}
                }
            }
            kept.map(|(id, _)| id)
        };
        for small_order in [[(1, Outbound), (2, Inbound)], [(2, Inbound), (1, Outbound)]] {
            for large_order in [[(1, Inbound), (2, Outbound)], [(2, Outbound), (1, Inbound)]] {
                assert_eq!(keep(SMALL, LARGE, small_order), Some(1));
                assert_eq!(keep(LARGE, SMALL, large_order), Some(1));
            }
        }
    }

    #[test]
    fn a_redial_in_the_same_direction_replaces_the_old_connection() {
        for (ours, theirs) in [(SMALL, LARGE), (LARGE, SMALL)] {
            for direction in [Outbound, Inbound] {
                assert_eq!(
                    resolve_duplicate(ours, theirs, Some(direction), direction),
                    Replace
                );
            }
        }
    }

    #[test]
    fn equal_keys_still_get_an_answer() {
        assert_eq!(
            resolve_duplicate(SMALL, SMALL, Some(Outbound), Inbound),
            Replace
        );
        assert_eq!(
            resolve_duplicate(SMALL, SMALL, Some(Inbound), Outbound),
            CloseNew
        );
    }
}

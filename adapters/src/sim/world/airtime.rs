//! How busy a channel is, and how long a node waits for it. Apart because the waits are
//! the firmware's formulas (`RadioInterface::getTxDelayMsec`, `getTxDelayMsecWeighted`,
//! `getRetransmissionMsec`, `AirTime`) and read best next to one another and to the
//! utilisation they depend on; the rest of the world only asks them for a wait or a percent.

use std::collections::VecDeque;
use std::time::Duration;

use mesh_core::{NodeId, Packet};
use rand::Rng;

use super::World;
use crate::sim::config::NodeRole;

/// Contention window bounds, as powers of two (`CWmin`, `CWmax`).
const CW_MIN: u32 = 3;
const CW_MAX: u32 = 8;
/// The SNR range mapped onto the contention window for relays.
const SNR_MIN: f32 = -20.0;
const SNR_MAX: f32 = 10.0;
/// The firmware's allowance for processing in the retransmission timeout.
const PROCESSING_TIME: Duration = Duration::from_millis(4500);
/// Channel utilisation is the busy share of this window (as the firmware reports it).
pub(super) const UTILIZATION_WINDOW: Duration = Duration::from_secs(60);
/// A node's own transmit airtime is reported over this window (`air_util_tx`).
pub(super) const AIR_UTIL_TX_WINDOW: Duration = Duration::from_secs(3600);

impl World {
    /// Percent of the last minute the mesh's channel was busy (any transmission), at `now`.
    pub fn channel_utilization(&self, mesh: &str, now: Duration) -> Option<f32> {
        let mesh = self.meshes.iter().find(|m| m.name == mesh)?;
        Some(busy_percent(
            &mesh.busy,
            UTILIZATION_WINDOW,
            now.max(self.now),
        ))
    }

    /// Channel utilisation of the node's mesh.
    pub fn node_channel_utilization(&self, node: NodeId, now: Duration) -> Option<f32> {
        let i = *self.index.get(&node)?;
        let busy = &self.meshes[self.nodes[i].mesh].busy;
        Some(busy_percent(busy, UTILIZATION_WINDOW, now.max(self.now)))
    }

    /// Percent of the last hour the node spent transmitting, at `now`.
    pub fn air_util_tx(&self, node: NodeId, now: Duration) -> Option<f32> {
        let i = *self.index.get(&node)?;
        Some(busy_percent(
            &self.nodes[i].tx_log,
            AIR_UTIL_TX_WINDOW,
            now.max(self.now),
        ))
    }

    /// How long a relay waits (`getTxDelayMsecWeighted`): routers early, clients after them
    /// with weak-SNR listeners first, late routers after everyone.
    pub(super) fn relay_delay(&mut self, idx: usize, snr: f32) -> Duration {
        let slot = self.meshes[self.nodes[idx].mesh].slot;
        let span = (CW_MAX - CW_MIN) as f32;
        let cw = ((snr - SNR_MIN) * span / (SNR_MAX - SNR_MIN) + CW_MIN as f32)
            .clamp(CW_MIN as f32, CW_MAX as f32) as u32;
        let slots = match self.nodes[idx].role {
            NodeRole::Router | NodeRole::Repeater => self.rng.random_range(0..=2 * cw),
            NodeRole::RouterLate => 2 * CW_MAX + (1 << CW_MAX) + self.rng.random_range(0..=2 * cw),
            NodeRole::Client | NodeRole::ClientMute => {
                2 * CW_MAX + self.rng.random_range(0..(1u32 << cw))
            }
        };
        slot * slots
    }

    /// Contention window size from the channel utilisation (0..100% → CWmin..CWmax).
    fn util_cw(&self, mesh: usize) -> u32 {
        let util = busy_percent(&self.meshes[mesh].busy, UTILIZATION_WINDOW, self.now);
        let cw = CW_MIN as f32 + util / 100.0 * (CW_MAX - CW_MIN) as f32;
        (cw as u32).clamp(CW_MIN, CW_MAX)
    }

    /// The random wait before a packet of our own (`getTxDelayMsec`).
    pub(super) fn originate_delay(&mut self, mesh: usize) -> Duration {
        let cw = self.util_cw(mesh);
        let slots = self.rng.random_range(0..(1u32 << cw));
        self.meshes[mesh].slot * slots
    }

    /// How long to wait for an ACK before retransmitting (`getRetransmissionMsec`).
    pub(super) fn retransmission_delay(&self, mesh: usize, packet: &Packet) -> Duration {
        let m = &self.meshes[mesh];
        let airtime = m.preset.time_on_air(packet.on_air_len());
        let cw = self.util_cw(mesh);
        let slots = (1u32 << cw) + 2 * CW_MAX + (1u32 << ((CW_MAX + CW_MIN) / 2));
        airtime * 2 + m.slot * slots + PROCESSING_TIME
    }
}

/// Drops intervals that ended before the window.
pub(super) fn prune(
    intervals: &mut VecDeque<(Duration, Duration)>,
    window: Duration,
    now: Duration,
) {
    let start = now.saturating_sub(window);
    while intervals.front().is_some_and(|&(_, end)| end <= start) {
        intervals.pop_front();
    }
}

/// Percent of `window` before `now` covered by the (start-ordered) intervals.
fn busy_percent(
    intervals: &VecDeque<(Duration, Duration)>,
    window: Duration,
    now: Duration,
) -> f32 {
    let start = now.saturating_sub(window);
    let mut busy = Duration::ZERO;
    let mut covered_to = start;
    for &(s, e) in intervals {
        let s = s.max(covered_to);
        let e = e.min(now);
        if e > s {
            busy += e - s;
            covered_to = e;
        }
    }
    (busy.as_secs_f64() / window.as_secs_f64() * 100.0) as f32
}

//! A radio as a destination: one relay at a time through the radio's client proxy, paced by
//! the airtime governor, whose preset and legal limit come from what the radio itself says it
//! is (the configuration only states what is expected).
//!
//! A packet for one node that the [`NodeDirectory`] has not heard for
//! [`DirectWait::absent_after`] (or never) is parked rather than sent: the radio would spend
//! airtime on retransmissions nobody answers. It goes once the node is heard again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use archipel_adapters::radio::{RadioHandle, RadioInfo};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use mesh_core::{Governor, ModemPreset, NodeId, Verdict};
use tokio::sync::watch;
use tracing::debug;

use super::{Prepared, Sink, Stopped};
use crate::config::region_duty_cycle;
use crate::nodes::{NodeDirectory, is_node};
use crate::router::Rendered;
use crate::stats::Stats;
use crate::store::Delivery;

/// How packets for one node wait while it is away.
#[derive(Debug, Clone)]
pub struct DirectWait {
    /// Who was heard when (every radio's ingest feeds it).
    pub nodes: Arc<NodeDirectory>,
    /// A node not heard for this long counts as absent (`[store] absent_after_minutes`).
    pub absent_after: Duration,
}

/// Whether a packet for `to` waits: `to` is one node, not `own` (the radio itself is always
/// there), and it was last heard more than `absent_after` before `now`, or never.
pub fn must_wait(
    to: NodeId,
    own: Option<NodeId>,
    last_heard: Option<Instant>,
    now: Instant,
    absent_after: Duration,
) -> bool {
    is_node(to)
        && Some(to) != own
        && last_heard.is_none_or(|at| now.saturating_duration_since(at) > absent_after)
}

/// A radio link wrapped for the drain worker.
pub struct RadioSink {
    /// The link.
    radio: RadioHandle,
    /// What the radio may still put on air, and when.
    governor: Governor,
    /// A duty cycle the operator set instead of the region's, which wins over the radio's
    /// region.
    duty_cycle_override: Option<f64>,
    /// The preset to count airtime with until the radio said its own.
    expected_preset: ModemPreset,
    /// The gateway id the relay envelopes carry (the radio drops envelopes from itself).
    gateway: NodeId,
    /// The radio's latest channel utilisation report (percent, when it came), from ingest.
    utilization: watch::Receiver<Option<(f32, Instant)>>,
    /// When packets for one node wait for it.
    direct: DirectWait,
    /// Where the governor's state is copied for the page and the metrics.
    gauges: Arc<Stats>,
    /// This radio's name in `gauges`.
    name: String,
}

/// A radio sink's airtime side: what the sink paces with, and where it shows it.
pub struct Airtime {
    /// The governor, already holding the airtime of the window as the store remembers it.
    pub governor: Governor,
    /// A duty cycle the operator set instead of the region's.
    pub duty_cycle_override: Option<f64>,
    /// The counters the governor's state is copied into.
    pub stats: Arc<Stats>,
    /// The radio's name there.
    pub name: String,
}

impl RadioSink {
    /// A sink for `radio`, paced by `airtime`.
    pub fn new(
        radio: RadioHandle,
        airtime: Airtime,
        expected_preset: Option<ModemPreset>,
        gateway: NodeId,
        utilization: watch::Receiver<Option<(f32, Instant)>>,
        direct: DirectWait,
    ) -> RadioSink {
        let Airtime {
            governor,
            duty_cycle_override,
            stats: gauges,
            name,
        } = airtime;
        let mut sink = RadioSink {
            radio,
            governor,
            duty_cycle_override,
            expected_preset: expected_preset.unwrap_or(ModemPreset::LongFast),
            gateway,
            utilization,
            direct,
            gauges,
            name,
        };
        // The page shows the window's budget from the start, not from the first send.
        sink.publish(Instant::now(), false);
        sink
    }

    /// Copies the governor's state out, counting a hold.
    fn publish(&mut self, now: Instant, held: bool) {
        if let Some(e) = self.gauges.endpoint(&self.name) {
            e.governor.publish(&mut self.governor, now);
            if held {
                Stats::add(&e.governor.holds, 1);
            }
        }
    }

    /// Takes the legal limit and the preset from what the radio reported in its handshake.
    fn follow_radio(&mut self, info: &RadioInfo) -> ModemPreset {
        if self.duty_cycle_override.is_none()
            && let Some(region) = info.region()
        {
            let limit = region_duty_cycle(region);
            if self.governor.config().duty_cycle_percent != limit {
                self.governor.set_duty_cycle_percent(limit);
            }
        }
        info.preset().unwrap_or(self.expected_preset)
    }
}

impl Sink for RadioSink {
    fn window(&self) -> usize {
        1
    }

    fn ready(&self) -> BoxFuture<'static, Result<(), Stopped>> {
        let radio = self.radio.clone();
        async move { radio.connected().await.map(|_| ()).map_err(|_| Stopped) }.boxed()
    }

    fn prepare(&mut self, row: &Delivery, out: Rendered, now: Instant) -> Prepared {
        let to = out.packet.to();
        let own = self.radio.info().and_then(|info| info.node_id());
        let heard = self.direct.nodes.last_heard(to);
        if must_wait(to, own, heard, now, self.direct.absent_after) {
            return Prepared::Park {
                node: to,
                reason: self.direct.nodes.waiting_line(to, now),
                heard,
            };
        }
        let preset = match self.radio.info() {
            Some(info) => self.follow_radio(&info),
            None => self.expected_preset,
        };
        if let Some((percent, at)) = *self.utilization.borrow() {
            self.governor.observe_utilization(percent, at);
        }
        let airtime = preset.time_on_air(out.packet.on_air_len());
        if let (Verdict::WaitUntil(until), hold) = self.governor.check(row.class, airtime, now) {
            debug!(class = %row.class, ?hold, "airtime governor holds the queue");
            self.publish(now, true);
            return Prepared::Hold(until);
        }
        let radio = self.radio.clone();
        let send = if out.packet.from() == NodeId::LOCAL {
            // A text a tool asked this radio to send as itself: the phone API, on the channel's
            // index here, decoded.
            let Some(mut packet) = out.decoded() else {
                return Prepared::Refuse(format!(
                    "stored text does not decrypt with the key of `{}`",
                    out.channel
                ));
            };
            let Some(index) = self.radio.info().and_then(|info| {
                info.active_channels()
                    .find(|c| info.channel_name(c) == out.channel)
                    .map(|c| c.index)
            }) else {
                return Prepared::Refuse(format!("the radio has no channel `{}`", out.channel));
            };
            packet.meta_mut().channel = u32::try_from(index).unwrap_or(0);
            async move { radio.send(packet).await }.boxed()
        } else {
            let gateway = self.gateway;
            async move {
                radio
                    .relay(out.packet, &out.channel, gateway, out.hops)
                    .await
            }
            .boxed()
        };
        Prepared::Send {
            send,
            airtime: Some(airtime),
        }
    }

    fn delivered(&mut self, airtime: Option<Duration>, now: Instant) {
        if let Some(airtime) = airtime {
            self.governor.record(airtime, now);
        }
        self.publish(now, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWAY: Duration = Duration::from_secs(7200);

    #[test]
    fn a_packet_for_a_node_not_heard_for_a_while_or_ever_waits_and_the_rest_goes() {
        let t = Instant::now() + Duration::from_secs(86_400);
        let amira = NodeId::new(0xa1b2_c3d4);
        let heard = |ago: u64| t.checked_sub(Duration::from_secs(ago));
        assert!(must_wait(amira, None, None, t, AWAY), "never heard");
        assert!(must_wait(amira, None, heard(7201), t, AWAY));
        assert!(!must_wait(amira, None, heard(7200), t, AWAY));
        assert!(!must_wait(amira, None, heard(5), t, AWAY));
        assert!(
            !must_wait(amira, Some(amira), None, t, AWAY),
            "the radio itself is always there"
        );
        for to in [
            NodeId::BROADCAST,
            NodeId::BROADCAST_NO_LORA,
            NodeId::LOCAL,
            NodeId::new(3),
        ] {
            assert!(!must_wait(to, None, None, t, AWAY), "{to} is no one node");
        }
    }
}

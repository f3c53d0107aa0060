//! How a simulated node encrypts what it originates and reads what it hears, PKI included,
//! as firmware v2.7.26 does (`src/mesh/Router.cpp`, `src/mesh/ReliableRouter.cpp`):
//!
//! | step | rule (firmware function) |
//! |------|--------------------------|
//! | encode | PKI when the node has a key, `to` is one node, the port is not TRACEROUTE/NODEINFO/ROUTING/POSITION and the channel is not `serial`/`gpio`; then the destination's key must be known, else `PKI_SEND_FAIL_PUBLIC_KEY` ("refusing to send legacy DM", since 2.7.19). A client's `pki_encrypted` that cannot be honoured, or whose `public_key` differs from the stored one, is `PKI_FAILED`. Everything else: the channel key (`perhapsEncode`) |
//! | decode | first PKI, when `channel == 0`, `to` is us, both keys are known and the payload is longer than 12 bytes: authentic but not a `Data` fails outright, a bad tag falls back to the channels; then every channel whose hash matches. A node with PKI refuses a channel-key TEXT_MESSAGE_APP addressed to it ("Rejecting legacy DM", since 2.7.14) (`perhapsDecode`) |
//! | learn | a decoded NodeInfo's public key, under the pinning rules of `keys` (`NodeDB::updateUser`) |
//! | answer | a decoded `want_ack` packet for us gets an ACK on its channel index; one we cannot decode gets a NAK on the primary channel: `PKI_UNKNOWN_PUBKEY` when it has no hash (`channel == 0`) and we lack the sender's key, else `NO_CHANNEL`. Hearing `PKI_UNKNOWN_PUBKEY` about our own packet, a node with PKI sends its NodeInfo to whoever said it (`ReliableRouter::sniffReceived`) |

use mesh_core::pki::{PKI_OVERHEAD, PkiError};
use mesh_core::proto::routing::Error as RoutingError;
use mesh_core::{NodeId, Packet, Payload, PublicKey, proto};
use prost::Message;
use rand::Rng;

use super::{MAX_LORA_FRAME, World, WorldError};
use crate::sim::keys::{UserUpdate, pki_exempt_channel, pki_port};

impl World {
    /// The packet as node `idx` puts it on the air (`perhapsEncode`); see the module doc.
    /// `packet` is decoded, with `from` and `id` set and `channel` = index.
    pub(super) fn encode(&mut self, idx: usize, packet: &Packet) -> Result<Packet, WorldError> {
        let node = &self.nodes[idx];
        let mesh = &self.meshes[node.mesh];
        let index = packet.channel();
        let no_channel = WorldError::NoChannel {
            node: node.id,
            index,
            count: mesh.channels.len(),
        };
        let Some(entry) = mesh.channels.get(index as usize) else {
            return Err(no_channel);
        };
        let (node_id, to, id) = (node.id, packet.to(), packet.id());
        let refused = move |error| WorldError::Refused {
            node: node_id,
            to,
            id,
            error,
        };
        let requested = packet.meta().pki_encrypted;
        let port = packet.data().map_or(0, |d| d.portnum);
        let pki = node.keys.private_key().filter(|_| {
            !packet.to().is_broadcast()
                && pki_port(port)
                && (requested || !pki_exempt_channel(&entry.name))
        });
        let Some(own) = pki else {
            if requested {
                return Err(refused(RoutingError::PkiFailed));
            }
            return mesh
                .channels
                .encrypt(packet, index as usize)
                .ok_or(no_channel);
        };
        if let Payload::Decoded { raw, .. } = packet.payload()
            && raw.len() + mesh_core::packet::ON_AIR_HEADER + PKI_OVERHEAD > MAX_LORA_FRAME
        {
            return Err(WorldError::TooLarge {
                len: raw.len() + mesh_core::packet::ON_AIR_HEADER + PKI_OVERHEAD,
            });
        }
        let Some(theirs) = node.keys.peer(packet.to()) else {
            return Err(refused(RoutingError::PkiSendFailPublicKey));
        };
        let asked = &packet.meta().public_key;
        if requested && asked.iter().any(|&b| b != 0) && asked[..] != theirs.as_bytes()[..] {
            return Err(refused(RoutingError::PkiFailed));
        }
        let (own, theirs) = (own.clone(), *theirs);
        let extra_nonce = self.pki_rng.random();
        packet
            .encrypt_pki(&own, &theirs, extra_nonce)
            .map_err(|_| refused(RoutingError::PkiFailed))
    }

    /// Node `idx` reads a packet as heard (`perhapsDecode`): `None` when it cannot, or will
    /// not (a legacy DM). See the module doc.
    pub(super) fn decode(&self, idx: usize, packet: &Packet) -> Option<Packet> {
        if packet.data().is_some() {
            return Some(packet.clone());
        }
        let node = &self.nodes[idx];
        let me = node.id;
        if packet.channel() == 0
            && packet.to() == me
            && let (Some(own), Some(theirs)) =
                (node.keys.private_key(), node.keys.peer(packet.from()))
        {
            match packet.decrypt_pki(own, theirs) {
                Ok(plain) => return Some(plain),
                Err(PkiError::NotData { .. }) => {
                    tracing::debug!(node = %me, from = %packet.from(), id = %packet.id(), "PKC decrypted, but not a Data");
                    return None;
                }
                // Too short or not authentic: not PKI after all, or not for these keys.
                Err(_) => {}
            }
        }
        let (_, plain) = self.meshes[node.mesh].channels.decrypt(packet)?;
        if node.keys.private_key().is_some()
            && packet.to() == me
            && plain.portnum() == Some(proto::PortNum::TextMessageApp)
        {
            tracing::debug!(node = %me, from = %packet.from(), id = %packet.id(), "rejecting legacy DM");
            return None;
        }
        Some(plain)
    }

    /// Node `idx` learns the public key of a decoded NodeInfo (whoever it was addressed to:
    /// the firmware's NodeInfo module is promiscuous).
    pub(super) fn learn(&mut self, idx: usize, decoded: &Packet) {
        let Some(data) = decoded.data() else {
            return;
        };
        if data.portnum != proto::PortNum::NodeinfoApp as i32 {
            return;
        }
        let Ok(user) = proto::User::decode(&data.payload[..]) else {
            return;
        };
        let from = decoded.from();
        let node = &mut self.nodes[idx];
        match node.keys.learn(from, &user) {
            UserUpdate::Take(_) => {}
            verdict => {
                tracing::debug!(node = %node.id, %from, ?verdict, "NodeInfo dropped");
            }
        }
    }

    /// A packet addressed to node `idx`, read (`decoded`) or not: answered as
    /// `ReliableRouter::sniffReceived` does.
    pub(super) fn addressed(&mut self, idx: usize, packet: &Packet, decoded: Option<&Packet>) {
        if let Some(d) = decoded {
            self.handle_addressed(idx, d);
            return;
        }
        if !packet.want_ack() {
            return;
        }
        let sender_key_known = self.nodes[idx].keys.peer(packet.from()).is_some();
        let error = if packet.channel() == 0 && !sender_key_known {
            RoutingError::PkiUnknownPubkey
        } else {
            RoutingError::NoChannel
        };
        self.queue_routing(idx, packet, error, 0);
    }

    /// A routing packet for node `idx`: told that its PKI message came from a key the other
    /// side lacks, it introduces itself to that node (`sendOurNodeInfo`).
    pub(super) fn on_routing_error(&mut self, idx: usize, packet: &Packet, data: &proto::Data) {
        let Ok(routing) = proto::Routing::decode(&data.payload[..]) else {
            return;
        };
        let unknown_key = matches!(
            routing.variant,
            Some(proto::routing::Variant::ErrorReason(e)) if e == RoutingError::PkiUnknownPubkey as i32
        );
        if !unknown_key || self.nodes[idx].keys.private_key().is_none() {
            return;
        }
        let user = self.nodes[idx].user.clone();
        let info = node_info_to(packet.from(), packet.channel(), &user);
        if let Err(e) = self.originate(idx, info) {
            tracing::debug!(node = %self.nodes[idx].id, error = %e, "NodeInfo reply not sent");
        }
    }

    /// The public key node `node` holds for `peer` (tests and the driver's checks).
    pub fn known_key(&self, node: NodeId, peer: NodeId) -> Option<PublicKey> {
        let i = *self.index.get(&node)?;
        self.nodes[i].keys.peer(peer).copied()
    }
}

/// Our NodeInfo for one node (`NodeInfoModule::sendOurNodeInfo` with a destination).
fn node_info_to(to: NodeId, channel: u32, user: &proto::User) -> Packet {
    let meta = proto::MeshPacket {
        to: to.get(),
        channel,
        hop_limit: u32::from(super::DEFAULT_HOP_LIMIT),
        ..Default::default()
    };
    Packet::from_data(
        meta,
        proto::Data {
            portnum: proto::PortNum::NodeinfoApp as i32,
            payload: user.encode_to_vec(),
            bitfield: Some(0),
            ..Default::default()
        },
    )
}

#[cfg(test)]
#[path = "pki_tests.rs"]
mod tests;

//! The checks serde cannot make: ranges, uniqueness and cross references. Apart from the
//! shape because the shape is what an operator reads to write a file, and these are the
//! rules behind its refusals, which everything downstream (the world, the devices) relies on.

use std::collections::{HashMap, HashSet};

use mesh_core::{FREQUENCY_MHZ, NodeId};

use super::{
    MAX_CHANNELS, MAX_PERIOD_SECS, MAX_TIME_SCALE, MeshConfig, SimConfig, SimConfigError,
    TrafficConfig, parse_region,
};

impl TrafficConfig {
    /// The configured periods, by name, for checking.
    fn periods(&self) -> [(&'static str, Option<f64>); 4] {
        [
            ("text_every_secs", self.text_every_secs),
            ("position_every_secs", self.position_every_secs),
            ("telemetry_every_secs", self.telemetry_every_secs),
            ("nodeinfo_every_secs", self.nodeinfo_every_secs),
        ]
    }
}

impl SimConfig {
    /// Checks what serde cannot: ranges, uniqueness and cross references.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        if !(self.time_scale > 0.0 && self.time_scale <= MAX_TIME_SCALE) {
            return Err(SimConfigError::TimeScale(self.time_scale));
        }
        if self.meshes.is_empty() {
            return Err(SimConfigError::NoMesh);
        }
        let mut mesh_names = HashSet::new();
        let mut node_ids = HashSet::new();
        let mut ports: HashMap<u16, NodeId> = HashMap::new();
        for (index, mesh) in self.meshes.iter().enumerate() {
            if mesh.name.is_empty() {
                return Err(SimConfigError::EmptyMeshName { index });
            }
            if !mesh_names.insert(mesh.name.as_str()) {
                return Err(SimConfigError::DuplicateMesh(mesh.name.clone()));
            }
            mesh.validate()?;
            for node in &mesh.nodes {
                if !node_ids.insert(node.id) {
                    return Err(SimConfigError::DuplicateNode(node.id));
                }
                if let Some(port) = node.attached.map(|a| a.tcp_port).filter(|&p| p != 0) {
                    if let Some(&first) = ports.get(&port) {
                        return Err(SimConfigError::DuplicatePort {
                            port,
                            first,
                            second: node.id,
                        });
                    }
                    ports.insert(port, node.id);
                }
            }
        }
        Ok(())
    }
}

impl MeshConfig {
    fn validate(&self) -> Result<(), SimConfigError> {
        let mesh = || self.name.clone();
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(SimConfigError::Loss {
                mesh: mesh(),
                loss: self.loss,
            });
        }
        if parse_region(&self.region).is_none() {
            return Err(SimConfigError::Region {
                mesh: mesh(),
                region: self.region.clone(),
            });
        }
        if let Some(value) = self.frequency_mhz.filter(|f| !FREQUENCY_MHZ.contains(f)) {
            return Err(SimConfigError::Frequency {
                mesh: mesh(),
                value,
            });
        }
        if let Err(e) = self.mqtt_root() {
            return Err(SimConfigError::MqttRoot {
                mesh: mesh(),
                reason: e.to_string(),
            });
        }
        if self.channels.is_empty() || self.channels.len() > MAX_CHANNELS {
            return Err(SimConfigError::ChannelCount {
                mesh: mesh(),
                count: self.channels.len(),
            });
        }
        for (index, ch) in self.channels.iter().enumerate() {
            if ch.name.len() > 11 {
                return Err(SimConfigError::ChannelName {
                    mesh: mesh(),
                    index,
                    name: ch.name.clone(),
                });
            }
        }
        let members: HashSet<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        for node in &self.nodes {
            if node.id.is_broadcast() || node.id == NodeId::LOCAL {
                return Err(SimConfigError::ReservedNode(node.id));
            }
            for &neighbour in node.neighbours.iter().flatten() {
                if neighbour == node.id {
                    return Err(SimConfigError::SelfNeighbour(node.id));
                }
                if !members.contains(&neighbour) {
                    return Err(SimConfigError::UnknownNeighbour {
                        node: node.id,
                        neighbour,
                        mesh: mesh(),
                    });
                }
            }
            let Some(traffic) = &node.traffic else {
                continue;
            };
            for (key, value) in traffic.periods() {
                if let Some(value) = value.filter(|v| !(*v > 0.0 && *v <= MAX_PERIOD_SECS)) {
                    return Err(SimConfigError::TrafficPeriod {
                        node: node.id,
                        key,
                        value,
                    });
                }
            }
            if usize::from(traffic.channel) >= self.channels.len() {
                return Err(SimConfigError::TrafficChannel {
                    node: node.id,
                    channel: traffic.channel,
                    mesh: mesh(),
                    count: self.channels.len(),
                });
            }
            if traffic.to != NodeId::BROADCAST
                && (!members.contains(&traffic.to) || traffic.to == node.id)
            {
                return Err(SimConfigError::TrafficDestination {
                    node: node.id,
                    to: traffic.to,
                    mesh: mesh(),
                });
            }
        }
        Ok(())
    }
}

//! `[http]`: the one listener for `/metrics`, the status page and its JSON API.

use std::net::SocketAddr;

use serde::Deserialize;

use super::Problem;

/// Where the listener is when `[http]` says nothing: this machine only (the page shows the
/// hub's state to whoever can reach it; binding beyond loopback is the operator's choice),
/// on the port Prometheus exporters of this kind commonly use.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `IP:PORT` to serve on; port 0 lets the system pick one (printed at start), for tests
    /// and for several gateways on one machine.
    pub listen: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: DEFAULT_LISTEN.to_owned(),
        }
    }
}

impl HttpSection {
    /// The address to bind, once validated.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.trim().parse().ok()
    }

    /// "this machine only" or what binding wider means, for the start summary.
    pub fn reach(&self) -> &'static str {
        match self.listen_addr() {
            Some(a) if a.ip().is_loopback() => "this machine only",
            Some(_) => "reachable from the network: anyone there can read the page",
            None => "not a valid address",
        }
    }
}

/// Checks `[http]`.
pub fn check(h: &HttpSection, p: &mut Vec<Problem>) {
    if h.listen_addr().is_none() {
        p.push(Problem::new(
            "http.listen",
            format!(
                "`{}` is not an IP:PORT address (no host names: a hub may have no DNS): give `{DEFAULT_LISTEN}` (this machine only, the default) or an address of this machine such as `0.0.0.0:9464` (every interface)",
                h.listen
            ),
        ));
    }
}

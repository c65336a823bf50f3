//! What a probe connects to, decided from what a host reported and nothing
//! else: a plain function from a host's row and its current listeners to the
//! targets, so that "never a range, never an address it was not told about"
//! is a property of values, tested here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use portwatch_common::wire::probe_worthy;
use portwatch_common::{Exposure, Listener, Proto};
use portwatch_model::{HostRow, Place};
use serde::Serialize;

/// One listener place to try, at each of its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaceTargets {
    /// The listener's place.
    #[serde(flatten)]
    pub place: Place,
    /// Where to connect: the place's port at each address the host reported
    /// for it, each once, in order.
    pub targets: Vec<SocketAddr>,
}

/// A listener place that is not tried, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The listener's place.
    #[serde(flatten)]
    pub place: Place,
    /// Why it is not tried.
    pub why: String,
}

/// What one probe of a host does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPlan {
    /// The host's name.
    pub host: String,
    /// The places to try, in order.
    pub probes: Vec<PlaceTargets>,
    /// The places not tried (recorded `not-probed`, with why), in order.
    pub skipped: Vec<Skipped>,
}

impl HostPlan {
    /// Every connect the plan makes.
    pub fn connects(&self) -> usize {
        self.probes.iter().map(|p| p.targets.len()).sum()
    }
}

/// The probe of `host`, whose open listeners are `listeners`: every TCP
/// listener beyond loopback in the host's own network namespace, at the
/// addresses the host reported as its own (a wildcard at each of its
/// family's, a specific one at its own if the host reported it), within
/// `networks` when that is not empty. Listeners sharing a place (several
/// sockets with SO_REUSEPORT) are one place; loopback listeners are left
/// out; everything else is skipped with why.
pub fn plan(host: &HostRow, listeners: &[Listener], networks: &[IpNet]) -> HostPlan {
    let own: BTreeSet<IpAddr> = host
        .addresses
        .iter()
        .map(|a| a.to_canonical())
        .filter(|a| probe_worthy(*a))
        .collect();
    // A place held by an IPv6 socket that also takes IPv4 is tried at both families.
    let mut places: BTreeMap<Place, bool> = BTreeMap::new();
    for l in listeners {
        if Exposure::of(l.local_addr) == Exposure::Loopback {
            continue;
        }
        let place = Place {
            netns: l.netns,
            proto: l.proto,
            addr: l.local_addr,
            port: l.local_port,
        };
        *places.entry(place).or_default() |= l.dual_stack;
    }
    let mut out = HostPlan {
        host: host.host.clone(),
        probes: Vec::new(),
        skipped: Vec::new(),
    };
    for (place, dual_stack) in places {
        match targets(&place, dual_stack, host.host_netns, &own, networks) {
            Ok(targets) => out.probes.push(PlaceTargets { place, targets }),
            Err(why) => out.skipped.push(Skipped { place, why }),
        }
    }
    out
}

/// Where `place` is tried, or why it is not.
fn targets(
    place: &Place,
    dual_stack: bool,
    host_netns: Option<u64>,
    own: &BTreeSet<IpAddr>,
    networks: &[IpNet],
) -> Result<Vec<SocketAddr>, String> {
    if place.proto == Proto::Udp {
        return Err("udp: a connect cannot tell whether it is reachable".to_owned());
    }
    match host_netns {
        None => return Err("the host's agent does not report its network namespace (an older agent)".to_owned()),
        Some(netns) if netns != place.netns => {
            return Err(
                "in another network namespace than the agent's (a container's): its addresses are not reported"
                    .to_owned(),
            )
        }
        Some(_) => {}
    }
    if own.is_empty() {
        return Err("the host reported no address of its own".to_owned());
    }
    let addr = place.addr.to_canonical();
    let candidates: Vec<IpAddr> = match Exposure::of(addr) {
        Exposure::Wildcard => own
            .iter()
            .copied()
            .filter(|a| match a {
                IpAddr::V4(_) => place.addr.is_ipv4() || dual_stack,
                IpAddr::V6(_) => place.addr.is_ipv6(),
            })
            .collect(),
        _ if own.contains(&addr) => vec![addr],
        _ => {
            return Err(format!(
                "{addr} is not one of the addresses the host reported as its own"
            ))
        }
    };
    if candidates.is_empty() {
        return Err(format!(
            "the host reported no {} address of its own",
            if place.addr.is_ipv4() { "IPv4" } else { "IPv6" }
        ));
    }
    let within: Vec<SocketAddr> = candidates
        .into_iter()
        .filter(|a| networks.is_empty() || networks.iter().any(|n| n.contains(a)))
        .map(|a| SocketAddr::new(a, place.port))
        .collect();
    if within.is_empty() {
        return Err("its addresses are outside [probe] networks".to_owned());
    }
    Ok(within)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::{family_of, Listener};
    use portwatch_model::HostStatus;

    const HOST_NS: u64 = 4_026_531_840;

    fn host(addresses: &[&str]) -> HostRow {
        HostRow {
            host: "db-1".into(),
            status: HostStatus::Up,
            first_seen: jiff::Timestamp::UNIX_EPOCH,
            last_seen: jiff::Timestamp::UNIX_EPOCH,
            agent_version: None,
            interval_ms: 10_000,
            os: None,
            kernel: None,
            boot_time: None,
            tags: Default::default(),
            listeners: 0,
            dropped_reports: 0,
            clock_skew_ms: None,
            clock_skew_at: None,
            clock_skewed: false,
            detection: None,
            host_netns: Some(HOST_NS),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn listener(proto: Proto, addr: &str, port: u16) -> Listener {
        let local_addr: IpAddr = addr.parse().unwrap();
        Listener {
            netns: HOST_NS,
            proto,
            family: family_of(local_addr),
            local_addr,
            local_port: port,
            inode: u64::from(port),
            uid: 0,
            user: None,
            exposure: Exposure::of(local_addr),
            dual_stack: false,
            processes: Vec::new(),
            firewall: None,
        }
    }

    fn tcp(addr: &str, port: u16) -> Listener {
        listener(Proto::Tcp, addr, port)
    }

    fn targets_of(plan: &HostPlan) -> Vec<String> {
        plan.probes
            .iter()
            .flat_map(|p| p.targets.iter().map(|t| t.to_string()))
            .collect()
    }

    fn skipped_of(plan: &HostPlan) -> Vec<(u16, &str)> {
        plan.skipped.iter().map(|s| (s.place.port, s.why.as_str())).collect()
    }

    #[test]
    fn a_wildcard_listener_is_tried_at_each_of_the_hosts_addresses_of_its_family_and_nowhere_else() {
        let h = host(&["10.0.0.5", "192.168.1.5", "2001:db8::5"]);
        let mut v6 = tcp("::", 8443);
        v6.dual_stack = true;
        let p = plan(&h, &[tcp("0.0.0.0", 22), tcp("::", 80), v6], &[]);
        assert_eq!(
            targets_of(&p),
            [
                "10.0.0.5:22",
                "192.168.1.5:22",
                "[2001:db8::5]:80",
                "10.0.0.5:8443",
                "192.168.1.5:8443",
                "[2001:db8::5]:8443"
            ]
        );
        assert_eq!(p.connects(), 6);
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn a_specific_listener_is_tried_at_its_address_only_when_the_host_reported_that_address() {
        let h = host(&["10.0.0.5", "10.0.0.6"]);
        let p = plan(
            &h,
            &[
                tcp("10.0.0.6", 5432),
                tcp("::ffff:10.0.0.5", 6379),
                tcp("203.0.113.9", 25),
            ],
            &[],
        );
        assert_eq!(targets_of(&p), ["10.0.0.6:5432", "10.0.0.5:6379"]);
        assert_eq!(
            skipped_of(&p),
            [(
                25,
                "203.0.113.9 is not one of the addresses the host reported as its own"
            )]
        );
    }

    #[test]
    fn loopback_is_left_out_and_udp_containers_and_hosts_without_addresses_are_not_probed() {
        let h = host(&["10.0.0.5"]);
        let mut in_container = tcp("0.0.0.0", 8080);
        in_container.netns = 4_026_532_999;
        let listeners = [
            tcp("127.0.0.1", 5432),
            tcp("::1", 5432),
            listener(Proto::Udp, "0.0.0.0", 53),
            in_container,
            tcp("::", 9000),
        ];
        let p = plan(&h, &listeners, &[]);
        assert!(p.probes.is_empty(), "{p:?}");
        assert_eq!(
            skipped_of(&p),
            [
                (9000, "the host reported no IPv6 address of its own"),
                (53, "udp: a connect cannot tell whether it is reachable"),
                (
                    8080,
                    "in another network namespace than the agent's (a container's): its addresses are not reported"
                ),
            ]
        );
        let mut old = host(&["10.0.0.5"]);
        old.host_netns = None;
        let p = plan(&old, &[tcp("0.0.0.0", 22)], &[]);
        assert_eq!(
            skipped_of(&p),
            [(
                22,
                "the host's agent does not report its network namespace (an older agent)"
            )]
        );
        let p = plan(&host(&[]), &[tcp("0.0.0.0", 22)], &[]);
        assert_eq!(skipped_of(&p), [(22, "the host reported no address of its own")]);
    }

    #[test]
    fn sockets_sharing_a_place_are_one_target_and_repeated_addresses_one_connect() {
        let h = host(&["10.0.0.5", "10.0.0.5", "::ffff:10.0.0.5"]);
        let mut second = tcp("0.0.0.0", 80);
        second.inode = 99;
        let p = plan(&h, &[tcp("0.0.0.0", 80), second], &[]);
        assert_eq!(targets_of(&p), ["10.0.0.5:80"]);
    }

    #[test]
    fn addresses_a_host_may_not_claim_are_never_targets() {
        // What sanitizing already drops, in case a row holds it anyway.
        let h = host(&["127.0.0.1", "169.254.0.1", "fe80::1", "0.0.0.0", "224.0.0.1"]);
        let p = plan(&h, &[tcp("0.0.0.0", 22), tcp("::", 22), tcp("169.254.0.1", 80)], &[]);
        assert!(p.probes.is_empty(), "{p:?}");
        assert_eq!(p.skipped.len(), 3);
    }

    #[test]
    fn networks_narrow_the_targets_and_a_place_left_with_none_is_not_probed() {
        let h = host(&["10.0.0.5", "192.168.1.5"]);
        let networks: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let p = plan(&h, &[tcp("0.0.0.0", 22), tcp("192.168.1.5", 80)], &networks);
        assert_eq!(targets_of(&p), ["10.0.0.5:22"]);
        assert_eq!(skipped_of(&p), [(80, "its addresses are outside [probe] networks")]);
    }
}

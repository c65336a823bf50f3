//! What the agent says about its host: name, OS, kernel, boot time, its own
//! version and interval, and the operator's tags. Read once at start (and
//! with every snapshot), through `sysinfo`; the host's network namespace and
//! its interfaces' addresses (for a collector that probes from outside)
//! through `/proc/self/ns/net` and getifaddrs(3).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use jiff::Timestamp;
use portwatch_common::wire::{host_addresses, valid_host_name, HostFacts};
use sysinfo::System;

/// The host name to report: `configured` if set, else the system's.
/// Fails, saying to set `host_name`, when the system's is not a valid name.
pub fn host_name(configured: Option<&str>) -> Result<String, String> {
    if let Some(name) = configured {
        return Ok(name.to_owned());
    }
    let name = System::host_name().ok().unwrap_or_default();
    if valid_host_name(&name) {
        Ok(name)
    } else {
        Err(format!(
            "the system's host name {name:?} cannot be reported; set host_name in the config or pass --host-name"
        ))
    }
}

/// The facts of this host.
pub fn host_facts(interval: Duration, tags: &BTreeMap<String, String>) -> HostFacts {
    let os = match (System::name().ok(), System::os_version().ok()) {
        (Some(name), Some(version)) if !name.contains(&version) => Some(format!("{name} {version}")),
        (Some(name), _) => Some(name),
        (None, version) => version,
    };
    HostFacts {
        detection: None,
        host_netns: own_netns(),
        addresses: own_addresses(),
        os,
        kernel: System::kernel_version().ok(),
        boot_time: System::boot_time()
            .ok()
            .and_then(|s| i64::try_from(s).ok())
            .and_then(|s| Timestamp::from_second(s).ok()),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        tags: tags.clone(),
    }
}

/// The inode of the network namespace this process runs in, `None` (logged)
/// when it cannot be read: a collector then probes none of its listeners.
fn own_netns() -> Option<u64> {
    match std::fs::metadata("/proc/self/ns/net") {
        Ok(m) => Some(m.ino()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read this agent's network namespace; the host's addresses are not reported");
            None
        }
    }
}

/// The addresses of this namespace's interfaces that are up, loopback and
/// link-local ones left out ([`host_addresses`]); none (logged) when they
/// cannot be read: a collector then probes only listeners bound to an address.
fn own_addresses() -> Vec<IpAddr> {
    read_addresses().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the host's interface addresses; they are not reported");
        Vec::new()
    })
}

/// The addresses of this namespace's interfaces that are up, loopback and
/// link-local ones left out, sorted; or why they cannot be read.
pub fn read_addresses() -> Result<Vec<IpAddr>, nix::Error> {
    use nix::net::if_::InterfaceFlags;
    let mut addresses: Vec<IpAddr> = nix::ifaddrs::getifaddrs()?
        .filter(|i| i.flags.contains(InterfaceFlags::IFF_UP) && !i.flags.contains(InterfaceFlags::IFF_LOOPBACK))
        .filter_map(|i| i.address)
        .filter_map(|a| match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
            (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
            _ => None,
        })
        .collect();
    addresses.sort_unstable();
    host_addresses(&mut addresses);
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_this_machine_are_filled_in() {
        let tags = BTreeMap::from([("env".to_owned(), "test".to_owned())]);
        let f = host_facts(Duration::from_secs(10), &tags);
        assert_eq!(f.interval_ms, 10_000);
        assert_eq!(f.agent_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(f.tags, tags);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(f.kernel.as_deref(), Some(kernel.trim()));
        let boot = f.boot_time.unwrap();
        assert!(boot < Timestamp::now() && boot > Timestamp::from_second(946_684_800).unwrap());
        assert!(f.os.is_some());
        let netns = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(f.host_netns, Some(netns));
        assert!(f.addresses.iter().all(|a| !a.is_loopback()), "{:?}", f.addresses);
    }

    #[test]
    fn a_configured_host_name_wins() {
        assert_eq!(host_name(Some("web-3")).unwrap(), "web-3");
        let system = host_name(None).unwrap();
        assert!(valid_host_name(&system));
    }
}

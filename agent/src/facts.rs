//! What the agent says about its host: name, OS, kernel, boot time, its own
//! version and interval, and the operator's tags. Read once at start (and
//! with every snapshot), through `sysinfo`.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use portwatch_common::wire::{valid_host_name, HostFacts};
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
    }

    #[test]
    fn a_configured_host_name_wins() {
        assert_eq!(host_name(Some("web-3")).unwrap(), "web-3");
        let system = host_name(None).unwrap();
        assert!(valid_host_name(&system));
    }
}

//! The view from outside: a host's reported namespace and addresses, and the
//! probe verdicts of its listener places, replaced whole by each probe.

use std::net::IpAddr;

use portwatch_collector::store::Store;
use portwatch_common::wire::ReportBody;
use portwatch_common::Proto;
use portwatch_model::{Place, ProbeVerdict, Verified};

use super::build::*;

fn verdict(addr: &str, port: u16, state: Verified, at: i64, detail: &str) -> ProbeVerdict {
    ProbeVerdict {
        place: Place {
            netns: 4_026_531_840,
            proto: Proto::Tcp,
            addr: addr.parse().unwrap(),
            port,
        },
        state,
        at: ts(at),
        detail: detail.to_owned(),
    }
}

pub fn a_hosts_namespace_and_addresses_read_back_as_its_latest_snapshot_said(store: &dyn Store) {
    let with = |seq: u64, netns: Option<u64>, addresses: &[&str]| {
        let mut report = snapshot(seq, ts(seq as i64), vec![owned(22, 1, &[10])]);
        if let ReportBody::Snapshot { facts, .. } = &mut report.body {
            facts.host_netns = netns;
            facts.addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
        }
        report
    };
    store
        .ingest(&batch("old", "s", vec![with(1, None, &[])]), ts(1))
        .unwrap();
    store
        .ingest(
            &batch(
                "new",
                "s",
                vec![with(1, Some(u64::MAX - 1), &["10.0.0.5", "2001:db8::5"])],
            ),
            ts(1),
        )
        .unwrap();
    let host = |name: &str| store.host(name, ts(2)).unwrap().unwrap();
    assert_eq!((host("old").host_netns, host("old").addresses), (None, vec![]));
    let new = host("new");
    assert_eq!(new.host_netns, Some(u64::MAX - 1), "an inode above 2^63 reads back");
    let expected: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()];
    assert_eq!(new.addresses, expected);
    // A restarted agent on a host that lost an address says so in its next snapshot.
    store
        .ingest(&batch("new", "s2", vec![with(1, Some(7), &["10.0.0.5"])]), ts(3))
        .unwrap();
    assert_eq!(host("new").addresses, expected[..1]);
    assert_eq!(host("new").host_netns, Some(7));
}

pub fn a_probe_replaces_every_verdict_of_its_host_and_no_other(store: &dyn Store) {
    assert_eq!(store.probe_verdicts("web-1").unwrap(), vec![]);
    assert_eq!(store.probed_hosts(ts(0)).unwrap(), Vec::<String>::new());
    let first = vec![
        verdict("0.0.0.0", 22, Verified::Reachable, 10, "10.0.0.5:22 connected"),
        verdict(
            "10.0.0.5",
            5432,
            Verified::Unreachable,
            10,
            "10.0.0.5:5432 timed out after 2s",
        ),
        verdict(
            "::",
            8080,
            Verified::NotProbed,
            10,
            "no address of the host was reported",
        ),
    ];
    store.replace_probe_verdicts("web-1", &first).unwrap();
    store.replace_probe_verdicts("db-1", &first[..1]).unwrap();
    let mut sorted = first.clone();
    sorted.sort_by_key(|v| v.place);
    assert_eq!(store.probe_verdicts("web-1").unwrap(), sorted);
    assert_eq!(store.probed_hosts(ts(0)).unwrap(), hosts(&["db-1", "web-1"]));
    assert_eq!(
        store.probed_hosts(ts(10)).unwrap(),
        hosts(&["db-1", "web-1"]),
        "at or after"
    );
    assert_eq!(store.probed_hosts(ts(11)).unwrap(), Vec::<String>::new(), "none since");
    // The next probe: 5432 reachable now, 8080 gone (no verdict left for it).
    let second = vec![
        verdict("10.0.0.5", 5432, Verified::Reachable, 20, "10.0.0.5:5432 connected"),
        verdict("0.0.0.0", 22, Verified::Reachable, 20, "10.0.0.5:22 connected"),
    ];
    store.replace_probe_verdicts("web-1", &second).unwrap();
    let got = store.probe_verdicts("web-1").unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter().all(|v| v.at == ts(20) && v.state == Verified::Reachable),
        "{got:?}"
    );
    assert_eq!(
        store.probe_verdicts("db-1").unwrap(),
        first[..1],
        "another host's are kept"
    );
    // A probe that found nothing to judge leaves the host without verdicts.
    store.replace_probe_verdicts("web-1", &[]).unwrap();
    assert_eq!(store.probe_verdicts("web-1").unwrap(), vec![]);
    assert_eq!(store.probed_hosts(ts(0)).unwrap(), hosts(&["db-1"]));
}

pub fn a_forgotten_host_loses_its_verdicts(store: &dyn Store) {
    send(store, "web-1", vec![snapshot(1, ts(1), vec![owned(22, 1, &[10])])]);
    store
        .replace_probe_verdicts("web-1", &[verdict("0.0.0.0", 22, Verified::Reachable, 2, "ok")])
        .unwrap();
    store.forget_host("web-1").unwrap().unwrap();
    assert_eq!(store.probe_verdicts("web-1").unwrap(), vec![]);
    assert_eq!(store.probed_hosts(ts(0)).unwrap(), Vec::<String>::new());
}

//! Inbound peers per listener: the time series of each listener place's
//! summaries, one point per place per minute, read at a moment or over a
//! window in pages, pruned with the history, gone with a forgotten host.

use jiff::Timestamp;
use portwatch_collector::store::{PeersQuery, Store};
use portwatch_common::peers::{Classes, PeerSample, PeerSummary, TopRemote};
use portwatch_model::PeersCursor;

use super::build::*;

const NETNS: u64 = 4_026_531_840;

/// A sample of `addr`:`port` at `at` with `connections` from 10.0.0.7 (and
/// one from 127.0.0.1 when there are two or more).
fn sample(addr: &str, port: u16, at: Timestamp, connections: u64) -> PeerSample {
    let mut top = vec![];
    if connections > 0 {
        top.push(TopRemote {
            addr: "10.0.0.7".parse().unwrap(),
            connections: connections.saturating_sub(1).max(1),
        });
    }
    if connections > 1 {
        top.push(TopRemote {
            addr: "127.0.0.1".parse().unwrap(),
            connections: 1,
        });
    }
    PeerSample {
        observed_at: at,
        netns: NETNS,
        local_addr: addr.parse().unwrap(),
        local_port: port,
        summary: PeerSummary {
            connections,
            distinct_remotes: top.len() as u64,
            classes: Classes {
                loopback: u64::from(connections > 1),
                private: connections.saturating_sub(1).max(u64::from(connections == 1)),
                public: 0,
            },
            top,
        },
    }
}

fn counts(points: &[portwatch_model::PeerPoint]) -> Vec<(u16, u64, Timestamp)> {
    points
        .iter()
        .map(|p| (p.place.port, p.summary.connections, p.at))
        .collect()
}

pub fn peers_read_back_at_a_moment_and_over_a_window_one_point_per_listener_per_minute(store: &dyn Store) {
    let t = |s: i64| ts(1_000_020 + s);
    let now = t(10_000);
    store
        .record_peers(
            "db-2",
            &[sample("0.0.0.0", 5432, t(0), 3), sample("::", 22, t(0), 0)],
            now,
        )
        .unwrap();
    // Within the same minute: replaces 5432's point of that minute.
    store
        .record_peers("db-2", &[sample("0.0.0.0", 5432, t(20), 4)], now)
        .unwrap();
    // An older sample of that minute, arriving late, does not undo it.
    store
        .record_peers("db-2", &[sample("0.0.0.0", 5432, t(10), 9)], now)
        .unwrap();
    store
        .record_peers("db-2", &[sample("0.0.0.0", 5432, t(130), 1)], now)
        .unwrap();
    store
        .record_peers("web-1", &[sample("0.0.0.0", 5432, t(0), 7)], now)
        .unwrap();

    assert_eq!(
        store.peers_at("db-2", None, t(-1)).unwrap(),
        vec![],
        "before any point: none"
    );
    let at = store.peers_at("db-2", None, t(60)).unwrap();
    // By place: network namespace, protocol, address (IPv4 first), port.
    assert_eq!(counts(&at), [(5432, 4, t(20)), (22, 0, t(0))]);
    let p = &at[0];
    assert_eq!((p.place.netns, p.place.addr.to_string()), (NETNS, "0.0.0.0".to_owned()));
    assert_eq!(p.place.proto, portwatch_common::Proto::Tcp);
    assert_eq!(
        p.summary,
        sample("0.0.0.0", 5432, t(20), 4).summary,
        "the summary reads back whole"
    );
    assert_eq!(
        counts(&store.peers_at("db-2", Some(5432), t(500)).unwrap()),
        [(5432, 1, t(130))]
    );
    assert_eq!(
        counts(&store.peers_at("web-1", None, t(500)).unwrap()),
        [(5432, 7, t(0))]
    );

    let window = |since, until, after, limit| PeersQuery {
        port: None,
        since,
        until,
        after,
        limit,
    };
    let all = store.peers_between("db-2", &window(None, None, None, 100)).unwrap();
    assert_eq!(counts(&all), [(22, 0, t(0)), (5432, 4, t(20)), (5432, 1, t(130))]);
    let within = store
        .peers_between("db-2", &window(Some(t(20)), Some(t(129)), None, 100))
        .unwrap();
    assert_eq!(counts(&within), [(5432, 4, t(20))], "since and until are inclusive");
    // Pages of one: every point once, in order.
    let mut paged = vec![];
    let mut after = None;
    loop {
        let page = store.peers_between("db-2", &window(None, None, after, 1)).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(PeersCursor::after(last));
        paged.extend(page);
        assert!(paged.len() <= 3, "pages never end");
    }
    assert_eq!(paged, all);
    let port = PeersQuery {
        port: Some(22),
        ..window(None, None, None, 100)
    };
    assert_eq!(counts(&store.peers_between("db-2", &port).unwrap()), [(22, 0, t(0))]);

    // Sent again: nothing changes. A clock ahead is dated now.
    store
        .record_peers("db-2", &[sample("0.0.0.0", 5432, t(130), 1)], now)
        .unwrap();
    store
        .record_peers("db-2", &[sample("0.0.0.0", 8080, ts(9_000_000_000), 2)], now)
        .unwrap();
    let all = store.peers_between("db-2", &window(None, None, None, 100)).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(counts(&all[3..]), [(8080, 2, now)]);
}

pub fn points_at_the_same_time_page_apart_by_place(store: &dyn Store) {
    let at = ts(1_000_000);
    let samples: Vec<PeerSample> = [("10.0.0.1", 80), ("0.0.0.0", 80), ("::", 80), ("0.0.0.0", 443)]
        .into_iter()
        .map(|(addr, port)| sample(addr, port, at, 1))
        .collect();
    store.record_peers("web-1", &samples, at).unwrap();
    let mut seen = vec![];
    let mut after = None;
    for _ in 0..10 {
        let query = PeersQuery {
            after: after.clone(),
            limit: 3,
            ..PeersQuery::default()
        };
        let page = store.peers_between("web-1", &query).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(PeersCursor::after(last));
        seen.extend(page.into_iter().map(|p| (p.place.port, p.place.addr.to_string())));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(sorted.len(), 4, "each once: {seen:?}");
}

pub fn peer_points_past_the_history_cutoff_are_pruned_and_a_forgotten_host_loses_them(store: &dyn Store) {
    send(store, "db-2", vec![snapshot(1, day(0), vec![owned(5432, 1, &[10])])]);
    send(store, "web-1", vec![snapshot(1, day(0), vec![owned(80, 1, &[10])])]);
    let now = day(100);
    store
        .record_peers(
            "db-2",
            &[sample("0.0.0.0", 5432, day(1), 2), sample("0.0.0.0", 5432, day(80), 3)],
            now,
        )
        .unwrap();
    store
        .record_peers("web-1", &[sample("0.0.0.0", 80, day(2), 1)], now)
        .unwrap();
    let plan = month_plan(now);
    assert_eq!(
        store.prune_count(&plan).unwrap().peer_points,
        2,
        "two older than 30 days"
    );
    let (pruned, _) = prune_all(store, &plan, 1);
    assert_eq!(pruned.peer_points, 2);
    let left = store
        .peers_between(
            "db-2",
            &PeersQuery {
                limit: 10,
                ..PeersQuery::default()
            },
        )
        .unwrap();
    assert_eq!(counts(&left), [(5432, 3, day(80))]);
    assert_eq!(store.peers_at("web-1", None, now).unwrap(), vec![]);
    assert_eq!(store.prune_count(&plan).unwrap().peer_points, 0);

    store
        .record_peers("web-1", &[sample("0.0.0.0", 80, day(90), 1)], now)
        .unwrap();
    let forgotten = store.forget_host("db-2").unwrap().unwrap();
    assert_eq!(forgotten.peer_points, 1);
    assert_eq!(store.peers_at("db-2", None, now).unwrap(), vec![]);
    assert_eq!(
        store.peers_at("web-1", None, now).unwrap().len(),
        1,
        "another host's are kept"
    );
}

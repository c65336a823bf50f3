//! Repeated in-process scan of an unchanged host: the agent's steady state, where one `Scanner`
//! is kept and `scan()` is called again and again.
//!
//! One warm-up scan fills the scanner's caches (owners of socket inodes); every measured scan then
//! sees the same sockets and owners ("no change"). `repeated_scan_with_peers` is the same scan
//! followed by the inbound peers' count (`peers::count`, top 5: one dump of the established TCP
//! sockets per namespace with a listener, aggregated as it is read), so the two medians compare
//! the scan with and without peers. `peers_from_kernel_events` is what the daemon does instead
//! every interval when kernel events are on: the summaries made from the book of connections the
//! events keep (`peers::book::Book::count`, filled here once from a dump), with the listeners'
//! index made from the snapshot as the daemon makes it; no scan and no dump. Run inside the fixture namespace by `bash agent/benches/run.sh`,
//! which reads the medians from `target/criterion/<bench>/new/estimates.json`; on its own:
//! `cargo bench -p portwatch-agent --bench repeat_scan` measures whatever this host holds.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portwatch_agent::peers;
use portwatch_agent::scan::{ScanOptions, Scanner};

fn repeated_scan_no_change(c: &mut Criterion) {
    let mut scanner = match Scanner::new(ScanOptions::default()) {
        Ok(scanner) => scanner,
        Err(e) => panic!("cannot create a scanner: {e}"),
    };
    let warm = match scanner.scan() {
        Ok(scan) => scan,
        Err(e) => panic!("warm-up scan failed: {e}"),
    };
    eprintln!(
        "repeated_scan_no_change: warm-up scan found {} sockets",
        warm.sockets.len()
    );
    drop(warm);

    c.bench_function("repeated_scan_no_change", |b| {
        b.iter(|| match scanner.scan() {
            Ok(scan) => black_box(scan),
            Err(e) => panic!("scan failed: {e}"),
        })
    });

    let scan_with_peers = |scanner: &mut Scanner| {
        let scan = match scanner.scan() {
            Ok(scan) => scan,
            Err(e) => panic!("scan failed: {e}"),
        };
        let listeners = peers::Listeners::of(&scan.sockets);
        let counted = peers::count(scanner, &listeners, peers::DEFAULT_TOP);
        if !counted.not_counted.is_empty() {
            panic!("peers not counted: {:?}", counted.not_counted);
        }
        (scan, counted)
    };
    let (_, counted) = scan_with_peers(&mut scanner);
    let connections: u64 = counted
        .by_netns
        .values()
        .flat_map(|ns| ns.listeners.values())
        .map(|s| s.connections)
        .sum();
    eprintln!(
        "repeated_scan_with_peers: {connections} established connections attributed to listeners, {} others",
        counted.other()
    );
    c.bench_function("repeated_scan_with_peers", |b| {
        b.iter(|| black_box(scan_with_peers(&mut scanner)))
    });

    let scan = match scanner.scan() {
        Ok(scan) => scan,
        Err(e) => panic!("scan failed: {e}"),
    };
    let snapshot = portwatch_common::Snapshot::from_sockets(&scan.sockets);
    let index = peers::Listeners::of_listeners(snapshot.listeners());
    let mut book = peers::book::Book::default();
    book.reset((0, 0), &index, peers::dump(&scanner, &index));
    let from_book = book.count(&index, peers::DEFAULT_TOP);
    let booked: u64 = from_book
        .by_netns
        .values()
        .flat_map(|ns| ns.listeners.values())
        .map(|s| s.connections)
        .sum();
    if booked != connections || !from_book.not_counted.is_empty() {
        panic!(
            "the book counts {booked} connections ({:?} not counted), the dump {connections}",
            from_book.not_counted
        );
    }
    eprintln!("peers_from_kernel_events: {} connections in the book", book.len());
    c.bench_function("peers_from_kernel_events", |b| {
        b.iter(|| {
            let index = peers::Listeners::of_listeners(snapshot.listeners());
            black_box(book.count(&index, peers::DEFAULT_TOP))
        })
    });
}

criterion_group! {
    name = benches;
    // A scan takes milliseconds: 20 samples keep a run to seconds, not minutes, at large size.
    // Command-line flags (--sample-size, --measurement-time, ...) still override these.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .without_plots();
    targets = repeated_scan_no_change
}
criterion_main!(benches);

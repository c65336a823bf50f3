//! A threat list of 1,000,000 prefixes: read, parsed and loaded from its file (the target: under
//! 2 s), and an address looked up in it behind the default allowlist (the target: under 1 µs).
//!
//! The list is a FireHOL-style `.netset` made here, the same every run (a fixed-seed generator,
//! nothing downloaded): 60 % host addresses, 25 % /24s, the rest /16 to /31, spread over the whole
//! IPv4 space, with a comment header. `cargo bench -p portwatch-collector --bench threat`
//! (README, Speed: threat lists).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portwatch_collector::threat::{self, Allowlist, Format, List, ListSpec, Table};
use portwatch_model::Severity;

/// Lines of the generated list.
const PREFIXES: usize = 1_000_000;

/// Addresses looked up in turn (half of them inside a listed network).
const PROBES: usize = 4096;

/// xorshift64*: a fixed sequence, the same on every machine.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The list's text, and some networks of it.
fn netset() -> (String, Vec<(u32, u8)>) {
    let mut seq = Sequence(0x9e37_79b9_7f4a_7c15);
    let mut text = String::with_capacity(PREFIXES * 17);
    text.push_str("#\n# generated: 1,000,000 prefixes for the threat list benchmark\n#\n");
    let mut some = Vec::with_capacity(PROBES / 2);
    for _ in 0..PREFIXES {
        let r = seq.next();
        let addr = (r >> 32) as u32;
        let len = match r % 100 {
            0..=59 => 32,
            60..=84 => 24,
            n => 16 + (n % 16) as u8,
        };
        let net = addr & (u32::MAX << (32 - len));
        if some.len() < PROBES / 2 && r.is_multiple_of(7) {
            some.push((net, len));
        }
        let a = Ipv4Addr::from(net);
        match len {
            32 => text.push_str(&format!("{a}\n")),
            _ => text.push_str(&format!("{a}/{len}\n")),
        }
    }
    (text, some)
}

/// This process's resident memory (VmRSS), in KiB; 0 if unknown.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn spec(path: std::path::PathBuf) -> ListSpec {
    ListSpec {
        name: "bench".to_owned(),
        path,
        format: Format::Netset,
        severity: Severity::Critical,
    }
}

fn threat_list(c: &mut Criterion) {
    let (text, some) = netset();
    let dir = std::env::temp_dir().join(format!("pw-threat-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join("bench.netset");
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = spec(path);
    let size = text.len();
    drop(text);
    let before = resident_kib();
    let (list, _) = List::read(&spec).unwrap_or_else(|e| panic!("{e}"));
    let after = resident_kib();
    eprintln!(
        "threat_list: {PREFIXES} lines, {} MB, {} distinct prefixes, {} bad lines; the trie takes {} MiB; resident \
         memory {} MiB more after the first load (the file's bytes and the parsed lines, freed, included)",
        size / 1_000_000,
        list.entries(),
        list.bad_lines,
        list.trie_bytes() >> 20,
        after.saturating_sub(before) / 1024
    );

    c.bench_function("threat_list_load_1m_netset", |b| {
        b.iter_with_large_drop(|| match List::read(&spec) {
            Ok((list, _)) => list,
            Err(e) => panic!("{e}"),
        })
    });

    let table = Table::new(Arc::new(Allowlist::new(&threat::default_allow())), vec![Arc::new(list)]);
    // Half inside a listed network (a random address of it), half random: most of those listed
    // nowhere, a few in the allowlist.
    let mut seq = Sequence(42);
    let probes: Vec<IpAddr> = (0..PROBES)
        .map(|i| {
            let r = seq.next() as u32;
            match some.get(i / 2).filter(|_| i % 2 == 0) {
                Some(&(net, len)) => {
                    let host_bits = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                    IpAddr::V4(Ipv4Addr::from(net | (r & host_bits)))
                }
                None => IpAddr::V4(Ipv4Addr::from(r)),
            }
        })
        .collect();
    let listed = probes.iter().filter(|a| !table.suspicious(**a).is_empty()).count();
    eprintln!("threat_list: {listed} of {PROBES} probe addresses are listed");
    let mut i = 0;
    c.bench_function("threat_list_lookup_1m", |b| {
        b.iter(|| {
            i = (i + 1) % PROBES;
            black_box(table.suspicious(black_box(probes[i])))
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    // A load takes about a second: 10 samples keep the run to a minute or so.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15))
        .without_plots();
    targets = threat_list
}
criterion_main!(benches);

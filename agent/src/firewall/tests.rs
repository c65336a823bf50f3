//! The evaluator on rulesets captured from `nft -j list ruleset`
//! (`agent/tests/firewall/NAME.nft` loaded, `NAME.json` printed).

use std::net::IpAddr;

use portwatch_common::Proto;

use super::*;

fn fixture(name: &str) -> Ruleset {
    let path = format!("{}/tests/firewall/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let json = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Ruleset::parse(&json).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ask(ruleset: &Ruleset, proto: Proto, addr: &str, port: u16, dual_stack: bool) -> Answer {
    let addr: IpAddr = addr.parse().unwrap();
    evaluate(ruleset, Query::for_listener(proto, addr, port, dual_stack))
}

fn tcp4(ruleset: &Ruleset, port: u16) -> Answer {
    ask(ruleset, Proto::Tcp, "0.0.0.0", port, false)
}

#[test]
fn an_accepted_port_is_open_and_names_its_rule() {
    let r = fixture("services");
    let a = tcp4(&r, 22);
    assert_eq!(a.reach, Reach::Open, "{a:?}");
    assert_eq!(a.rule, "inet filter input handle 8");
    // An anonymous set, with a counter before the verdict.
    assert_eq!(tcp4(&r, 443).reach, Reach::Open);
    assert_eq!(tcp4(&r, 443).rule, "inet filter input handle 10");
}

#[test]
fn a_port_nothing_accepts_is_filtered_by_the_policy() {
    let r = fixture("services");
    let a = tcp4(&r, 3306);
    assert_eq!(a.reach, Reach::Filtered, "{a:?}");
    assert_eq!(a.rule, "inet filter input policy drop");
}

#[test]
fn a_reject_rule_filters() {
    let a = tcp4(&fixture("services"), 25);
    assert_eq!(a.reach, Reach::Filtered, "{a:?}");
    assert_eq!(a.rule, "inet filter input handle 21");
}

#[test]
fn a_source_address_match_restricts_and_names_the_sources() {
    let r = fixture("services");
    let a = tcp4(&r, 5432);
    assert_eq!(a.reach, Reach::Restricted, "{a:?}");
    assert_eq!(a.sources, vec!["ip saddr 10.0.0.0/8"]);
    assert_eq!(a.rule, "inet filter input handle 11");

    let v6 = ask(&r, Proto::Tcp, "::", 5432, false);
    assert_eq!(v6.reach, Reach::Restricted, "{v6:?}");
    assert_eq!(v6.sources, vec!["ip6 saddr fd00::/8"]);

    // A dual-stack socket: both families' sources.
    let both = ask(&r, Proto::Tcp, "::", 5432, true);
    assert_eq!(both.reach, Reach::Restricted, "{both:?}");
    assert_eq!(both.sources, vec!["ip saddr 10.0.0.0/8", "ip6 saddr fd00::/8"]);
}

#[test]
fn a_named_set_of_sources_is_named() {
    let a = tcp4(&fixture("services"), 8080);
    assert_eq!(a.reach, Reach::Restricted, "{a:?}");
    assert_eq!(a.sources, vec!["ip saddr @admins"]);
}

#[test]
fn protocol_matters_for_tcp_and_udp_dport_but_not_for_th_dport() {
    let r = fixture("services");
    assert_eq!(ask(&r, Proto::Udp, "0.0.0.0", 53, false).reach, Reach::Open);
    assert_eq!(tcp4(&r, 53).reach, Reach::Filtered);
    assert_eq!(ask(&r, Proto::Udp, "0.0.0.0", 22, false).reach, Reach::Filtered);
    // th dport 9000-9100, for both protocols.
    assert_eq!(ask(&r, Proto::Udp, "0.0.0.0", 9050, false).reach, Reach::Open);
    assert_eq!(tcp4(&r, 9100).reach, Reach::Open);
    assert_eq!(tcp4(&r, 9101).reach, Reach::Filtered);
    // meta l4proto { tcp, udp } th dport 7001.
    assert_eq!(ask(&r, Proto::Udp, "0.0.0.0", 7001, false).reach, Reach::Open);
    // meta nfproto ipv4 tcp dport 7002: IPv4 only.
    assert_eq!(tcp4(&r, 7002).reach, Reach::Open);
    assert_eq!(ask(&r, Proto::Tcp, "::", 7002, false).reach, Reach::Filtered);
}

#[test]
fn a_jump_returns_and_a_goto_does_not_come_back() {
    let r = fixture("services");
    for port in [6000, 6001] {
        let a = tcp4(&r, port);
        assert_eq!(a.reach, Reach::Restricted, "{port}: {a:?}");
        assert_eq!(a.sources, vec!["ip saddr 172.16.0.0/12"]);
        assert_eq!(a.rule, "inet filter svc handle 24");
    }
}

#[test]
fn accepting_established_connections_does_not_open_a_port_to_new_ones() {
    let r = fixture("established_only");
    let a = tcp4(&r, 5432);
    assert_eq!(a.reach, Reach::Filtered, "{a:?}");
    assert_eq!(a.rule, "inet filter input handle 4");
}

#[test]
fn loopback_interface_rules_do_not_open_a_listener_to_the_world() {
    // `iifname "lo" accept` precedes the drop in established_only and in services.
    assert_eq!(tcp4(&fixture("established_only"), 22).reach, Reach::Filtered);
    assert_eq!(tcp4(&fixture("services"), 3306).reach, Reach::Filtered);
}

#[test]
fn another_interface_restricts_and_a_dropped_set_is_an_exception() {
    let r = fixture("interfaces");
    let a = tcp4(&r, 443);
    assert_eq!(a.reach, Reach::Restricted, "{a:?}");
    assert_eq!(a.sources, vec!["iifname eth1"]);
    let b = tcp4(&r, 80);
    assert_eq!(b.reach, Reach::Restricted, "{b:?}");
    assert_eq!(b.sources, vec!["ip saddr != @blocklist"]);
    // The blocklist is IPv4: IPv6 sources are all accepted.
    assert_eq!(ask(&r, Proto::Tcp, "::", 80, false).reach, Reach::Open);
}

#[test]
fn a_drop_in_any_base_chain_is_final() {
    let r = fixture("two_tables");
    let a = tcp4(&r, 22);
    assert_eq!(a.reach, Reach::Filtered, "{a:?}");
    assert_eq!(a.rule, "ip second input handle 2");
    // The ip table does not see IPv6.
    assert_eq!(ask(&r, Proto::Tcp, "::", 22, false).reach, Reach::Open);
    let both = ask(&r, Proto::Tcp, "::", 22, true);
    assert_eq!(both.reach, Reach::Restricted, "{both:?}");
    assert_eq!(both.sources, vec!["any IPv6 source"]);
    assert_eq!(tcp4(&r, 80).reach, Reach::Open);
}

#[test]
fn an_empty_ruleset_filters_nothing() {
    let a = tcp4(&fixture("empty"), 22);
    assert_eq!(a.reach, Reach::Open, "{a:?}");
    assert_eq!(a.rule, "no base chain on the input path");
}

#[test]
fn verdict_maps_on_ct_state_and_port_are_evaluated() {
    let r = fixture("unsupported");
    assert_eq!(tcp4(&r, 22).reach, Reach::Open);
    assert_eq!(tcp4(&r, 23).reach, Reach::Filtered);
    assert_eq!(tcp4(&r, 23).rule, "inet t input handle 5");
}

#[test]
fn an_unsupported_construct_is_unknown_never_a_guess() {
    let r = fixture("unsupported");
    let limit = tcp4(&r, 1000);
    assert_eq!(limit.reach, Reach::Unknown, "{limit:?}");
    assert!(limit.rule.contains("statement limit not evaluated"), "{}", limit.rule);
    let fib = tcp4(&r, 1001);
    assert_eq!(fib.reach, Reach::Unknown, "{fib:?}");
    assert!(fib.rule.contains("match on fib not evaluated"), "{}", fib.rule);
    // A rule whose port does not match is skipped, whatever else it holds;
    // the concatenation after it is met by every other port.
    let concat = tcp4(&r, 30001);
    assert_eq!(concat.reach, Reach::Unknown, "{concat:?}");
    assert!(
        concat.rule.contains("inet t input handle 9: match on concat"),
        "{}",
        concat.rule
    );
}

#[test]
fn legacy_iptables_tables_make_an_open_answer_unknown_but_not_a_filtered_one() {
    let rules = NamespaceRules {
        ruleset: Ok(fixture("services")),
        legacy: Some("ip filter".to_owned()),
    };
    let q = |port| Query::for_listener(Proto::Tcp, "0.0.0.0".parse().unwrap(), port, false);
    let open = rules.answer(q(22));
    assert_eq!(open.reach, Reach::Unknown);
    assert!(open.rule.starts_with("iptables-legacy not evaluated"), "{}", open.rule);
    assert_eq!(rules.answer(q(3306)).reach, Reach::Filtered);
}

#[test]
fn an_unreadable_ruleset_is_unknown_with_the_reason() {
    let rules = NamespaceRules {
        ruleset: Err("nft -j list ruleset failed: Operation not permitted".to_owned()),
        legacy: None,
    };
    let a = rules.answer(Query::for_listener(Proto::Tcp, "0.0.0.0".parse().unwrap(), 22, false));
    assert_eq!(a.reach, Reach::Unknown);
    assert!(a.rule.contains("Operation not permitted"));
}

#[test]
fn legacy_tables_are_read_from_the_names_files() {
    let dir = std::env::temp_dir().join(format!("portwatch-legacy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(legacy_tables(&dir), None);
    std::fs::write(dir.join("ip_tables_names"), "filter\nnat\n").unwrap();
    assert_eq!(legacy_tables(&dir).as_deref(), Some("ip filter, ip nat"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_document_that_is_not_a_ruleset_is_an_error() {
    assert!(Ruleset::parse(b"{\"rules\": []}").is_err());
    assert!(Ruleset::parse(b"not json").is_err());
}

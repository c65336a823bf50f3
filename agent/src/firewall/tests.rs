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

fn saved(name: &str) -> Saved {
    let path = format!("{}/tests/firewall/{name}.save", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Saved::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The namespace rules of an empty nftables ruleset and the legacy texts `v4` and `v6`.
fn legacy_only(v4: Option<&str>, v6: Option<&str>) -> NamespaceRules {
    NamespaceRules {
        ruleset: Ok(fixture("empty")),
        legacy: Some(Legacy {
            tables: "ip filter".to_owned(),
            ipv4: v4.map(|n| Ok(saved(n))),
            ipv6: v6.map(|n| Ok(saved(n))),
        }),
    }
}

fn legacy_tcp4(rules: &NamespaceRules, addr: &str, port: u16) -> Answer {
    rules.answer(Query::for_listener(Proto::Tcp, addr.parse().unwrap(), port, false))
}

#[test]
fn a_saved_legacy_ruleset_parses_into_tables_chains_policies_and_rules() {
    let s = saved("legacy_services");
    let names: Vec<&str> = s.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["filter", "raw"]);
    let filter = s.table("filter").unwrap();
    let input = filter.chain("INPUT").unwrap();
    assert_eq!(input.policy.as_deref(), Some("DROP"));
    assert_eq!(filter.chain("svc").unwrap().policy, None);
    assert_eq!(input.rules.len(), 20);
    assert_eq!(input.rules[0].args, ["-i", "lo", "-j", "ACCEPT"]);
    // The comment is one argument, unquoted.
    let web = &input.rules[4];
    assert!(web.args.iter().any(|a| a == "web, from anywhere"), "{web:?}");
    assert_eq!(
        web.text,
        "-A INPUT -p tcp -m multiport --dports 80,443 -m comment --comment \"web, from anywhere\" -j ACCEPT"
    );
}

#[test]
fn a_legacy_text_that_is_cut_short_or_malformed_is_an_error_that_says_where() {
    use legacy::ParseError;
    assert_eq!(
        Saved::parse("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n"),
        Err(ParseError::NotCommitted("filter".to_owned()))
    );
    assert_eq!(
        Saved::parse("-A INPUT -j ACCEPT\n"),
        Err(ParseError::OutsideTable {
            line: 1,
            what: "a rule"
        })
    );
    assert_eq!(
        Saved::parse("*filter\n:INPUT ACCEPT [0:0]\n-A FOO -j ACCEPT\nCOMMIT\n"),
        Err(ParseError::UnknownChain {
            line: 3,
            chain: "FOO".to_owned()
        })
    );
    assert!(matches!(
        Saved::parse("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment \"open -j ACCEPT\nCOMMIT\n"),
        Err(ParseError::Rule { line: 3, .. })
    ));
    assert!(matches!(
        Saved::parse("*filter\nbogus\nCOMMIT\n"),
        Err(ParseError::Unexpected { line: 2, .. })
    ));
    assert_eq!(Saved::parse(""), Ok(Saved::default()));
}

#[test]
fn a_legacy_source_accept_before_a_drop_policy_restricts_and_names_the_source() {
    let r = legacy_only(Some("legacy_services"), None);
    let ssh = legacy_tcp4(&r, "0.0.0.0", 22);
    assert_eq!(ssh.reach, Reach::Restricted, "{ssh:?}");
    assert_eq!(ssh.sources, ["-s 10.0.0.0/8"]);
    assert_eq!(
        ssh.rule,
        "iptables-legacy filter INPUT rule 3: -A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT"
    );
}

#[test]
fn a_legacy_drop_rule_and_the_drop_policy_filter() {
    let r = legacy_only(Some("legacy_services"), None);
    let pg = legacy_tcp4(&r, "0.0.0.0", 5432);
    assert_eq!(pg.reach, Reach::Filtered, "{pg:?}");
    assert_eq!(
        pg.rule,
        "iptables-legacy filter INPUT rule 4: -A INPUT -p tcp -m tcp --dport 5432 -j DROP"
    );
    let other = legacy_tcp4(&r, "0.0.0.0", 3306);
    assert_eq!(other.reach, Reach::Filtered, "{other:?}");
    assert_eq!(other.rule, "iptables-legacy filter INPUT policy DROP");
    // REJECT filters too; loopback and established-only rules open nothing.
    assert_eq!(legacy_tcp4(&r, "0.0.0.0", 25).reach, Reach::Filtered);
}

#[test]
fn legacy_multiport_state_syn_and_protocols_are_evaluated() {
    let r = legacy_only(Some("legacy_services"), None);
    for port in [80, 443, 8000, 8100] {
        let a = legacy_tcp4(&r, "0.0.0.0", port);
        assert_eq!(a.reach, Reach::Open, "{port}: {a:?}");
        assert!(a.rule.starts_with("iptables-legacy filter INPUT rule "), "{}", a.rule);
    }
    assert_eq!(legacy_tcp4(&r, "0.0.0.0", 8101).reach, Reach::Filtered);
    let udp = |port| r.answer(Query::for_listener(Proto::Udp, "0.0.0.0".parse().unwrap(), port, false));
    assert_eq!(udp(53).reach, Reach::Open, "--state NEW accepts");
    assert_eq!(legacy_tcp4(&r, "0.0.0.0", 53).reach, Reach::Filtered, "the udp rule");
    assert_eq!(udp(22).reach, Reach::Filtered, "the tcp rule");
}

#[test]
fn a_legacy_jump_returns_and_a_goto_does_not_come_back() {
    let r = legacy_only(Some("legacy_services"), None);
    let jump = legacy_tcp4(&r, "0.0.0.0", 6000);
    assert_eq!(jump.reach, Reach::Restricted, "{jump:?}");
    assert_eq!(jump.sources, ["-s 172.16.0.0/12"]);
    assert!(
        jump.rule
            .ends_with("iptables-legacy filter svc rule 1: -A svc -s 172.16.0.0/12 -j ACCEPT"),
        "{}",
        jump.rule
    );
    let goto = legacy_tcp4(&r, "0.0.0.0", 6001);
    assert_eq!(goto.reach, Reach::Restricted, "{goto:?}");
    assert_eq!(goto.sources, ["-s 10.1.0.0/16"]);
}

#[test]
fn legacy_prefixes_nest_an_interface_restricts_and_a_negated_source_is_an_exception() {
    let r = legacy_only(Some("legacy_services"), None);
    // -s 10.0.0.0/8 -j admins, where -s 10.1.0.0/16 accepts: the inner prefix.
    let nested = legacy_tcp4(&r, "0.0.0.0", 9200);
    assert_eq!(nested.reach, Reach::Restricted, "{nested:?}");
    assert_eq!(nested.sources, ["-s 10.0.0.0/8 -s 10.1.0.0/16"]);
    let eth1 = legacy_tcp4(&r, "0.0.0.0", 9000);
    assert_eq!(eth1.reach, Reach::Restricted, "{eth1:?}");
    assert_eq!(eth1.sources, ["-i eth1"]);
    let except = legacy_tcp4(&r, "0.0.0.0", 9100);
    assert_eq!(except.reach, Reach::Restricted, "{except:?}");
    assert_eq!(except.sources, ["-s 192.168.0.0/16"]);
}

#[test]
fn a_legacy_destination_match_is_decided_for_a_bound_address_and_restricts_a_wildcard() {
    let r = legacy_only(Some("legacy_services"), None);
    assert_eq!(legacy_tcp4(&r, "10.9.0.1", 7002).reach, Reach::Open);
    assert_eq!(legacy_tcp4(&r, "10.9.0.2", 7002).reach, Reach::Filtered);
    let wild = legacy_tcp4(&r, "0.0.0.0", 7002);
    assert_eq!(wild.reach, Reach::Restricted, "{wild:?}");
    assert_eq!(wild.sources, ["-d 10.9.0.1/32"]);
}

#[test]
fn a_legacy_log_target_goes_on_and_an_unknown_match_is_unknown() {
    let r = legacy_only(Some("legacy_services"), None);
    assert_eq!(legacy_tcp4(&r, "0.0.0.0", 7001).reach, Reach::Open);
    let limit = legacy_tcp4(&r, "0.0.0.0", 7000);
    assert_eq!(limit.reach, Reach::Unknown, "{limit:?}");
    assert!(limit.rule.contains("rule 15: -A INPUT"), "{}", limit.rule);
    assert!(limit.rule.ends_with("-m limit not evaluated"), "{}", limit.rule);
}

#[test]
fn a_legacy_target_is_a_chain_of_the_table_whatever_its_case_else_unknown() {
    let r = legacy_only(Some("legacy_chains"), None);
    let admins = legacy_tcp4(&r, "0.0.0.0", 22);
    assert_eq!(admins.reach, Reach::Restricted, "{admins:?}");
    assert_eq!(admins.sources, ["-s 10.2.0.0/16"]);
    assert_eq!(
        admins.rule,
        "iptables-legacy filter ADMINS rule 1: -A ADMINS -s 10.2.0.0/16 -j ACCEPT"
    );
    let addrtype = legacy_tcp4(&r, "0.0.0.0", 2222);
    assert_eq!(addrtype.reach, Reach::Unknown, "{addrtype:?}");
    assert!(
        addrtype.rule.ends_with("-m addrtype not evaluated"),
        "{}",
        addrtype.rule
    );
    let queue = legacy_tcp4(&r, "0.0.0.0", 2223);
    assert_eq!(queue.reach, Reach::Unknown, "{queue:?}");
    assert!(queue.rule.ends_with("target NFQUEUE not evaluated"), "{}", queue.rule);
    // Rules for other ports are skipped whatever they hold.
    assert_eq!(legacy_tcp4(&r, "0.0.0.0", 2224).reach, Reach::Filtered);
}

#[test]
fn a_drop_in_the_legacy_raw_table_is_final() {
    let r = legacy_only(Some("legacy_services"), None);
    let udp = r.answer(Query::for_listener(
        Proto::Udp,
        "0.0.0.0".parse().unwrap(),
        11211,
        false,
    ));
    assert_eq!(udp.reach, Reach::Filtered, "{udp:?}");
    assert_eq!(
        udp.rule,
        "iptables-legacy raw PREROUTING rule 1: -A PREROUTING -p udp -m udp --dport 11211 -j DROP"
    );
    assert_eq!(legacy_tcp4(&r, "0.0.0.0", 11211).reach, Reach::Open);
}

#[test]
fn a_legacy_mangle_rule_on_the_path_is_unknown_and_nat_is_not_read() {
    let r = legacy_only(Some("legacy_mangle"), None);
    let marked = legacy_tcp4(&r, "0.0.0.0", 3306);
    assert_eq!(marked.reach, Reach::Unknown, "{marked:?}");
    assert!(marked.rule.contains("mangle PREROUTING rule 1"), "{}", marked.rule);
    assert!(marked.rule.ends_with("target MARK not evaluated"), "{}", marked.rule);
    assert_eq!(legacy_tcp4(&r, "0.0.0.0", 3307).reach, Reach::Filtered);
    assert_eq!(legacy_tcp4(&r, "0.0.0.0", 8080).reach, Reach::Open);
}

#[test]
fn each_family_meets_its_own_legacy_tables() {
    let r = legacy_only(Some("legacy_services"), Some("legacy_services6"));
    let v6 = r.answer(Query::for_listener(Proto::Tcp, "::".parse().unwrap(), 5432, false));
    assert_eq!(v6.reach, Reach::Restricted, "{v6:?}");
    assert_eq!(v6.sources, ["-s fd00::/8"]);
    assert!(v6.rule.contains("ip6tables-legacy filter INPUT rule 1"), "{}", v6.rule);
    // Dual stack: IPv4 is dropped by iptables, IPv6 restricted by ip6tables.
    let both = r.answer(Query::for_listener(Proto::Tcp, "::".parse().unwrap(), 5432, true));
    assert_eq!(both.reach, Reach::Restricted, "{both:?}");
    assert_eq!(both.sources, ["-s fd00::/8"]);
    // No IPv6 legacy table: IPv6 is nftables' alone (here: open).
    let v4_only = legacy_only(Some("legacy_services"), None);
    let dual = v4_only.answer(Query::for_listener(Proto::Tcp, "::".parse().unwrap(), 5432, true));
    assert_eq!(dual.reach, Reach::Restricted, "{dual:?}");
    assert_eq!(dual.sources, ["any IPv6 source"]);
}

#[test]
fn nftables_and_legacy_iptables_must_both_accept() {
    // nftables' services ruleset restricts 5432 to 10.0.0.0/8 and opens 22;
    // the legacy tables drop 5432 and restrict 22.
    let rules = NamespaceRules {
        ruleset: Ok(fixture("services")),
        legacy: Some(Legacy {
            tables: "ip filter, ip raw".to_owned(),
            ipv4: Some(Ok(saved("legacy_services"))),
            ipv6: None,
        }),
    };
    let q = |port| Query::for_listener(Proto::Tcp, "0.0.0.0".parse().unwrap(), port, false);
    assert_eq!(rules.answer(q(5432)).reach, Reach::Filtered);
    let ssh = rules.answer(q(22));
    assert_eq!(ssh.reach, Reach::Restricted, "{ssh:?}");
    assert_eq!(ssh.sources, ["-s 10.0.0.0/8"]);
    // nftables drops 3306 by its policy, whatever the legacy tables say.
    let mysql = rules.answer(q(3306));
    assert_eq!(mysql.reach, Reach::Filtered);
    assert_eq!(mysql.rule, "inet filter input policy drop");
    // Legacy tables that could not be read: unknown, with why, unless nftables filters.
    let unreadable = NamespaceRules {
        legacy: Some(Legacy {
            tables: "ip filter".to_owned(),
            ipv4: Some(Err(
                "iptables-legacy-save not found: install iptables to evaluate the firewall".to_owned(),
            )),
            ipv6: None,
        }),
        ..rules
    };
    let open = unreadable.answer(q(22));
    assert_eq!(open.reach, Reach::Unknown);
    assert!(open.rule.starts_with("iptables-legacy-save not found"), "{}", open.rule);
    assert_eq!(unreadable.answer(q(3306)).reach, Reach::Filtered);
    // And the scan warns of it, as of an unreadable nftables ruleset.
    assert_eq!(
        unreadable.unavailable(),
        Some("iptables-legacy-save not found: install iptables to evaluate the firewall")
    );
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
fn an_unreadable_legacy_names_file_is_not_taken_for_no_tables() {
    let dir = std::env::temp_dir().join(format!("portwatch-legacy-unreadable-{}", std::process::id()));
    // A directory where the file should be: read_to_string fails, and not with NotFound.
    std::fs::create_dir_all(dir.join("ip_tables_names")).unwrap();
    let tables = legacy_tables(&dir).unwrap_or_default();
    assert!(tables.starts_with("ip (unreadable: "), "{tables}");
    let legacy = read_legacy(&dir).expect("legacy tables, if unreadable");
    let reason = legacy.ipv4.expect("IPv4 is not known to be empty").unwrap_err();
    assert!(reason.starts_with("cannot read ip_tables_names: "), "{reason}");
    assert!(legacy.ipv6.is_none(), "no IPv6 names file: no IPv6 tables");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_document_that_is_not_a_ruleset_is_an_error() {
    assert!(Ruleset::parse(b"{\"rules\": []}").is_err());
    assert!(Ruleset::parse(b"not json").is_err());
}

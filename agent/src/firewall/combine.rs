//! Two packet filters on one path, as the kernel runs them: a packet is
//! delivered only when both accept it (nftables' hooks and x_tables' hooks
//! both run; a drop in either is final).

use super::{Answer, Reach};

/// The answer for a packet that must pass both `first` and `second`:
/// - filtered by either: filtered (by `first`'s rule when both filter);
/// - else unknown by either: unknown, with its reason;
/// - else restricted by either: restricted; by both, accepted only from the
///   sources both accept, said as `(first's sources) and (second's)`;
/// - open only when both are open: named by the rules that accepted, rather
///   than by a policy or an empty path, where one did.
pub fn both(first: Answer, second: Answer) -> Answer {
    use Reach::{Filtered, Open, Restricted, Unknown};
    match (first.reach, second.reach) {
        (Filtered, _) => first,
        (_, Filtered) => second,
        (Unknown, _) => first,
        (_, Unknown) => second,
        (Restricted, Open) => first,
        (Open, Restricted) => second,
        (Restricted, Restricted) => {
            let side = |a: &Answer| format!("({})", a.sources.join(" or "));
            Answer {
                reach: Restricted,
                sources: vec![format!("{} and {}", side(&first), side(&second))],
                rule: format!("{}; {}", first.rule, second.rule),
            }
        }
        (Open, Open) => match (by_default(&first.rule), by_default(&second.rule)) {
            (false, false) => Answer {
                reach: Open,
                sources: Vec::new(),
                rule: format!("{}; {}", first.rule, second.rule),
            },
            (true, false) => second,
            (_, true) => first,
        },
    }
}

/// Whether an open answer's rule is a policy or an empty input path rather
/// than a rule that accepted (the texts both evaluators give those).
fn by_default(rule: &str) -> bool {
    rule.contains(" policy ")
        || rule.ends_with("no base chain on the input path")
        || rule.ends_with("no chain on the input path")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(reach: Reach, rule: &str, sources: &[&str]) -> Answer {
        Answer {
            reach,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            rule: rule.to_owned(),
        }
    }

    fn open(rule: &str) -> Answer {
        answer(Reach::Open, rule, &[])
    }

    fn filtered(rule: &str) -> Answer {
        answer(Reach::Filtered, rule, &[])
    }

    fn restricted(rule: &str, sources: &[&str]) -> Answer {
        answer(Reach::Restricted, rule, sources)
    }

    fn unknown(reason: &str) -> Answer {
        Answer::unknown(reason)
    }

    #[test]
    fn a_drop_in_either_filter_is_final() {
        for other in [
            open("o"),
            restricted("r", &["-s 10.0.0.0/8"]),
            unknown("u"),
            filtered("f2"),
        ] {
            assert_eq!(both(filtered("f"), other.clone()), filtered("f"), "{other:?}");
            let reversed = both(other.clone(), filtered("f"));
            assert_eq!(reversed.reach, Reach::Filtered, "{other:?}");
            if other.reach != Reach::Filtered {
                assert_eq!(reversed.rule, "f", "{other:?}");
            }
        }
    }

    #[test]
    fn unknown_in_either_is_unknown_unless_the_other_filters() {
        for other in [open("o"), restricted("r", &["-s 10.0.0.0/8"]), unknown("u2")] {
            assert_eq!(both(unknown("u"), other.clone()), unknown("u"), "{other:?}");
            let reversed = both(other.clone(), unknown("u"));
            assert_eq!(reversed.reach, Reach::Unknown, "{other:?}");
        }
        assert_eq!(both(open("o"), unknown("u")), unknown("u"));
    }

    #[test]
    fn restricted_by_one_and_open_by_the_other_keeps_the_restriction() {
        let r = restricted("r", &["-s 10.0.0.0/8"]);
        assert_eq!(both(r.clone(), open("o")), r);
        assert_eq!(both(open("o"), r.clone()), r);
    }

    #[test]
    fn restricted_by_both_is_restricted_to_what_both_accept() {
        let a = both(
            restricted("nft", &["ip saddr 10.0.0.0/8", "iifname eth1"]),
            restricted("legacy", &["-s 10.1.0.0/16"]),
        );
        assert_eq!(a.reach, Reach::Restricted);
        assert_eq!(
            a.sources,
            vec!["(ip saddr 10.0.0.0/8 or iifname eth1) and (-s 10.1.0.0/16)"]
        );
        assert_eq!(a.rule, "nft; legacy");
    }

    #[test]
    fn open_only_when_both_are_open_and_named_by_the_rules_that_accepted() {
        let a = both(
            open("inet filter input handle 4"),
            open("iptables-legacy filter INPUT rule 2: -A INPUT -j ACCEPT"),
        );
        assert_eq!(a.reach, Reach::Open);
        assert_eq!(
            a.rule,
            "inet filter input handle 4; iptables-legacy filter INPUT rule 2: -A INPUT -j ACCEPT"
        );
        assert!(a.sources.is_empty());
        let policy = both(
            open("inet filter input handle 4"),
            open("iptables-legacy filter INPUT policy ACCEPT"),
        );
        assert_eq!(policy.rule, "inet filter input handle 4");
        let empty = both(
            open("no base chain on the input path"),
            open("iptables-legacy filter INPUT rule 1: -A INPUT -j ACCEPT"),
        );
        assert_eq!(empty.rule, "iptables-legacy filter INPUT rule 1: -A INPUT -j ACCEPT");
        let defaults = both(
            open("inet filter input policy accept"),
            open("iptables-legacy filter INPUT policy ACCEPT"),
        );
        assert_eq!(defaults.rule, "inet filter input policy accept");
    }
}

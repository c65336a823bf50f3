//! The store's conformance suite: every behaviour of the store contract
//! ([`portwatch_collector::store::Store`]), written once against the traits
//! and run against every backend. A backend's test file builds a fresh,
//! empty store per test and invokes [`conformance_suite!`] with it:
//!
//! ```ignore
//! #[macro_use]
//! mod conformance;
//! conformance_suite!(Fixture::new());  // Fixture: conformance::Backend
//! ```
//!
//! Each test is a plain `pub fn name(store: &dyn Store)` in the module of its
//! concern ([`history`], [`tokens`], [`alerts`], [`retention`], [`leases`], [`probes`], [`peers`]); the macro
//! makes one `#[test]` of each, in a module of the same name, and one more
//! that fails when a module has a behaviour the macro does not list. What the tests
//! build (listeners, reports, batches, findings, times) is in [`build`], one
//! set for them all and for a backend's own tests. What only one backend can
//! show (its files, its SQL plans, its migrations) stays in that backend's
//! own tests.
// Test code: a failed store call fails the test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod alerts;
pub mod build;
pub mod history;
pub mod leases;
pub mod peers;
pub mod probes;
pub mod retention;
pub mod tokens;

use portwatch_collector::store::Store;

/// A fresh, empty store of one backend, and whatever it needs kept alive
/// (a directory, a database) until the test ends.
pub trait Backend {
    /// The store under test.
    fn store(&self) -> &dyn Store;
}

/// One `#[test]` per behaviour of the suite, each on a fresh store from `$make`
/// (an expression giving an `impl Backend`, evaluated in the caller's module).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@each $make;
            history {
                snapshot_then_deltas_answer_listeners_at_past_instants,
                ipv6_dual_stack_and_unknown_fields_round_trip,
                the_same_batch_sent_twice_is_stored_once,
                a_gap_asks_for_a_resync_and_nothing_after_it_is_stored,
                a_snapshot_in_parts_numbered_across_2_pow_63_is_reconciled,
                a_delta_of_an_unknown_session_asks_for_a_resync,
                a_new_host_must_start_with_a_snapshot_but_is_listed_anyway,
                an_agent_restart_with_the_same_listeners_records_no_event,
                a_restart_snapshot_closes_exactly_what_is_gone_at_its_time,
                an_owner_change_is_one_close_and_one_open,
                a_firewall_change_is_one_close_and_one_open_and_its_answer_reads_back,
                a_close_observed_before_the_open_is_clamped_to_it,
                a_snapshot_from_a_year_ahead_then_a_correct_one_leave_telnet_visible_now,
                a_clock_stepping_back_never_dates_a_change_before_the_last_one,
                first_seen_cannot_be_dated_before_the_backlog_window_or_the_hosts_last_report,
                hosts_registered_after_a_read_are_named_and_ordered_by_name,
                who_answers_across_hosts_and_protos,
                history_pages_give_every_interval_once_in_opening_order,
                history_returns_the_intervals_overlapping_the_window,
                hosts_are_up_or_silent_as_of_now,
                ports_are_first_seen_fleet_wide_and_per_host_even_when_replayed_late,
                threads_read_while_others_write,
                hosts_registered_by_racing_writers_are_all_named_on_every_read,
                the_same_new_programs_stored_by_racing_writers_read_back_whole_on_every_host,
                hosts_show_how_their_agent_detects_listeners_as_its_latest_snapshot_said,
            }
            tokens {
                tokens_are_created_found_listed_and_revoked,
                a_revoked_tokens_name_can_be_given_to_a_new_token,
                a_rotated_token_works_until_its_overlap_ends_and_its_replacement_from_the_rotation_on,
            }
            alerts {
                baseline_changes_are_logged_with_who_when_and_why_and_a_same_source_is_no_change,
                an_alert_opens_once_while_its_condition_holds_and_resolves_when_it_clears,
                a_flood_opens_the_cap_and_one_summary_whose_count_changes_in_place_without_an_event,
                a_sink_s_progress_is_its_cursor_and_the_events_done_after_it,
                outbox_events_become_visible_in_id_order_while_writers_race,
                an_alert_whose_finding_grows_more_severe_is_resolved_and_opened_again_at_its_severity,
            }
            leases {
                a_lease_is_one_holders_until_it_expires_or_is_released,
                of_holders_racing_for_a_free_lease_exactly_one_gets_it,
            }
            peers {
                peers_read_back_at_a_moment_and_over_a_window_one_point_per_listener_per_minute,
                points_at_the_same_time_page_apart_by_place,
                peer_points_past_the_history_cutoff_are_pruned_and_a_forgotten_host_loses_them,
            }
            probes {
                a_hosts_namespace_and_addresses_read_back_as_its_latest_snapshot_said,
                a_probe_replaces_every_verdict_of_its_host_and_no_other,
                a_forgotten_host_loses_its_verdicts,
            }
            retention {
                closed_intervals_past_the_cutoff_go_in_small_batches_and_open_ones_stay_however_old,
                a_program_named_again_while_a_pass_runs_is_kept,
                a_program_named_by_an_interval_given_a_forgotten_hosts_id_is_kept,
                an_outbox_id_is_never_given_twice_so_a_sinks_place_stays_right,
                a_resolved_alert_goes_with_its_events_only_once_every_sink_has_delivered_them,
                the_baseline_log_keeps_each_baselines_latest_change,
                the_space_pruning_frees_is_reclaimed_step_by_step_to_the_end,
                a_forgotten_host_leaves_nothing_behind_and_its_ports_first_sightings_move,
                a_batch_of_a_host_being_forgotten_finds_a_new_empty_host_and_is_asked_for_a_snapshot,
                a_host_registered_after_another_was_forgotten_is_read_under_its_own_name,
            }
        );
    };
    (@each $make:expr; $($module:ident { $($name:ident),* $(,)? })*) => {
        #[test]
        fn every_behaviour_of_the_suite_is_listed() {
            let listed = [$($(concat!(stringify!($module), "::", stringify!($name))),*),*];
            assert_eq!($crate::conformance::unlisted(&listed), Vec::<String>::new());
        }
        $(
            mod $module {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[test]
                    fn $name() {
                        let backend = $make;
                        $crate::conformance::$module::$name($crate::conformance::Backend::store(&backend));
                    }
                )*
            }
        )*
    };
}

/// The behaviours (`pub fn name(store: &dyn Store)`) of the suite's modules
/// that `listed` (`module::name`, as [`conformance_suite!`] lists them) lacks.
pub fn unlisted(listed: &[&str]) -> Vec<String> {
    let sources = [
        ("history", include_str!("history.rs")),
        ("tokens", include_str!("tokens.rs")),
        ("alerts", include_str!("alerts.rs")),
        ("retention", include_str!("retention.rs")),
        ("leases", include_str!("leases.rs")),
        ("probes", include_str!("probes.rs")),
        ("peers", include_str!("peers.rs")),
    ];
    let mut missing = Vec::new();
    for (module, source) in sources {
        // `pub fn NAME(PARAMS)` at the start of a line, PARAMS wrapped or not.
        for item in source.split("\npub fn ").skip(1) {
            let Some((name, rest)) = item.split_once('(') else {
                continue;
            };
            let params: String = rest.split(')').next().unwrap_or_default().split_whitespace().collect();
            if params.trim_end_matches(',') != "store:&dynStore" {
                continue;
            }
            let name = format!("{module}::{name}");
            if !listed.contains(&name.as_str()) {
                missing.push(name);
            }
        }
    }
    missing
}

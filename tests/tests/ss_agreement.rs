//! `portwatch-agent scan` and `ss -Htulpn` agree on the host namespace.
//!
//! In a test binary of its own: cargo runs test binaries one at a time, so
//! no other test opens or closes listeners while the two are compared.

use std::process::Command;

use portwatch_tests::*;

#[test]
fn scan_agrees_with_ss_on_the_host_namespace() {
    let _l = Listeners::start(
        &[],
        &[
            "--children",
            "2",
            "tcp4:127.0.0.1:0",
            "tcp6:[::1]:0",
            "tcp46:[::]:0",
            "udp4:0.0.0.0:0",
            "udp6:[::]:0",
        ],
    )
    .unwrap();
    // Other processes on the machine may open or close sockets between the two
    // reads; a real disagreement persists, a race does not.
    let mut last = String::new();
    for _ in 0..5 {
        let own_netns = own_netns().unwrap().to_string();
        let ours = keys_of_scan(&scan_json(&["--netns", &own_netns]));
        let ss = Command::new("ss")
            .arg("-Htulpn")
            .output()
            .expect("ss (iproute2) is installed by tests/run.sh");
        assert!(ss.status.success());
        let theirs = keys_of_ss(&String::from_utf8_lossy(&ss.stdout)).unwrap();
        if ours == theirs {
            return;
        }
        last = format!(
            "only in scan: {:#?}\nonly in ss: {:#?}",
            ours.difference(&theirs).collect::<Vec<_>>(),
            theirs.difference(&ours).collect::<Vec<_>>()
        );
    }
    panic!("scan and ss -Htulpn disagree:\n{last}");
}

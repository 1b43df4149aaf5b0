use super::*;
use crate::xds::resource::type_url::SECRET;

fn secret(name: &str, version: &str) -> Arc<Resource> {
    Resource::from_parts(name, version, Default::default())
}

const V1: &str = "00000000000000a1";
const V2: &str = "00000000000000b2";

#[test]
fn a_rotation_is_current_once_every_node_acked_it() {
    let t = Tracker::default();
    let k1 = secret("credential/k", V1);
    t.published("credential/k", "k", V1);
    // Two nodes get and ACK the first value: not a rotation, nothing measured.
    for (stream, nonce) in [(1, "1"), (2, "1")] {
        t.sent(stream, nonce, SECRET, &[&k1], true);
        t.acked(stream, nonce);
    }
    let p = t.progress("credential/k").unwrap();
    assert_eq!(
        (p.version.as_str(), p.nodes_current, p.nodes_total),
        (V1, 2, 2)
    );
    assert_eq!(t.propagation()[2].count, 0);

    let k2 = secret("credential/k", V2);
    t.published("credential/k", "k", V2);
    assert_eq!(t.progress("credential/k").unwrap().nodes_current, 0);
    t.sent(1, "2", SECRET, &[&k2], true);
    t.sent(2, "2", SECRET, &[&k2], true);
    t.acked(1, "2");
    let p = t.progress("credential/k").unwrap();
    assert_eq!((p.nodes_current, p.nodes_total, p.publications), (1, 2, 2));
    let h = t.propagation();
    assert_eq!(
        [h[0].count, h[1].count, h[2].count],
        [1, 0, 0],
        "50 % reached, not 90"
    );
    assert_eq!(
        t.held(2),
        vec![Held {
            name: "credential/k".into(),
            version: V1.into(),
            current: false
        }]
    );
    t.acked(2, "2");
    let h = t.propagation();
    assert_eq!([h[0].count, h[1].count, h[2].count], [1, 1, 1]);
    assert!(t.held(2)[0].current);
}

#[test]
fn a_nack_keeps_the_old_version_and_a_closed_stream_stops_counting() {
    let t = Tracker::default();
    let k1 = secret("credential/k", V1);
    let k2 = secret("credential/k", V2);
    t.published("credential/k", "k", V1);
    for stream in [1, 2] {
        t.sent(stream, "1", SECRET, &[&k1], true);
        t.acked(stream, "1");
    }
    t.published("credential/k", "k", V2);
    t.sent(1, "2", SECRET, &[&k2], true);
    t.sent(2, "2", SECRET, &[&k2], true);
    t.acked(1, "2");
    t.nacked(2, "2");
    // A late ACK of the NACKed nonce changes nothing.
    t.acked(2, "2");
    assert_eq!(t.held(2)[0].version, V1);
    assert_eq!(t.propagation()[2].count, 0);
    t.close(2);
    let p = t.progress("credential/k").unwrap();
    assert_eq!((p.nodes_current, p.nodes_total), (1, 1));
    assert_eq!(t.propagation()[2].count, 1, "every remaining node holds it");
}

#[test]
fn a_reconnected_node_holds_what_it_names_and_unsent_acks_are_ignored() {
    let t = Tracker::default();
    let k1 = secret("credential/k", V1);
    t.published("credential/k", "k", V1);
    t.holds(7, SECRET, &[&k1]);
    assert!(t.held(7)[0].current);
    // Once tracked, `holds` does not overrule the ACK bookkeeping.
    let k2 = secret("credential/k", V2);
    t.published("credential/k", "k", V2);
    t.sent(7, "1", SECRET, &[&k2], true);
    t.holds(7, SECRET, &[&k2]);
    assert!(!t.held(7)[0].current, "sent, not ACKed");
    t.acked(7, "99");
    t.acked(7, "not a nonce");
    assert!(!t.held(7)[0].current);
    t.acked(7, "1");
    assert!(t.held(7)[0].current);
}

#[test]
fn a_sotw_response_without_a_credential_means_the_node_no_longer_needs_it() {
    let t = Tracker::default();
    let a = secret("credential/a", V1);
    let b = secret("credential/b", V1);
    t.published("credential/a", "a", V1);
    t.published("credential/b", "b", V1);
    t.sent(1, "1", SECRET, &[&a, &b], true);
    t.sent(1, "2", SECRET, &[&a], true);
    assert_eq!(t.progress("credential/b").unwrap().nodes_total, 0);
    assert_eq!(t.progress("credential/a").unwrap().nodes_total, 1);
    t.retain(|name| name != "credential/a");
    assert!(t.progress("credential/a").is_none());
    assert!(t.held(1).is_empty());
}

#[test]
fn versions_are_kept_exactly_when_keyed() {
    assert_eq!(
        version_text(version_id("0123456789abcdef")),
        "0123456789abcdef"
    );
    assert_ne!(version_id("short"), version_id("other"));
    assert_ne!(version_id(""), 0);
}

#[test]
fn a_delta_unsubscribe_stops_counting_the_node() {
    let t = Tracker::default();
    let k1 = secret("credential/k", V1);
    let k2 = secret("credential/k", V2);
    t.published("credential/k", "k", V1);
    for stream in [1, 2] {
        t.sent(stream, "1", SECRET, &[&k1], false);
        t.acked(stream, "1");
    }
    t.published("credential/k", "k", V2);
    t.sent(1, "2", SECRET, &[&k2], false);
    t.sent(2, "2", SECRET, &[&k2], false);
    t.acked(1, "2");
    assert_eq!(t.progress("credential/k").unwrap().nodes_current, 1);
    // Stream 2's cluster went away: it unsubscribed and will never ACK the new value.
    t.released(2, "credential/k");
    let p = t.progress("credential/k").unwrap();
    assert_eq!((p.nodes_current, p.nodes_total), (1, 1));
    assert_eq!(t.propagation()[2].count, 1, "100 % reached");
    // Unknown names and streams are ignored.
    t.released(9, "credential/k");
    t.released(1, "credential/none");
    assert_eq!(t.progress("credential/k").unwrap().nodes_total, 1);
}

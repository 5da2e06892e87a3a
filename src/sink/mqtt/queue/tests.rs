use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use super::*;
use proptest::prelude::*;

const LABELS: [&str; 3] = ["person", "cat", "car"];

/// `label` on the whole frame of `cam0`.
fn w(label: &str) -> Watched {
    Watched::whole("cam0", label)
}

/// `label` in `zone` of `camera`.
fn wz(camera: &str, zone: &str, label: &str) -> Watched {
    Watched {
        camera: camera.into(),
        zone: zone.into(),
        label: label.into(),
    }
}

/// What the interleaving tests watch: two cameras, the whole frame and a zone named like a
/// label, one label on both cameras.
fn many() -> Vec<Watched> {
    vec![
        w("person"),
        w("cat"),
        wz("cam0", "cat", "person"),
        wz("cam1", "all", "person"),
        wz("cam1", "driveway", "car"),
    ]
}

fn settings(qos: QoS, capacity: usize, window: usize, discovery: bool) -> Settings {
    Settings {
        topics: Topics::new("edgeclip", "pi4", "homeassistant"),
        watched: LABELS[..2].iter().map(|l| w(l)).collect(),
        qos,
        discovery,
        snapshots: false,
        capacity,
        max_age: None,
        window,
    }
}

/// The time of the tests' events.
const T0: SystemTime = SystemTime::UNIX_EPOCH;

fn queue() -> Queue {
    Queue::new(settings(QoS::AtLeastOnce, 4, 8, false))
}

fn payload(frame: u64) -> Vec<u8> {
    format!("{{\"frame\":{frame}}}").into_bytes()
}

/// Hands over everything the window allows; returns what was handed over.
fn drain(q: &mut Queue) -> Vec<ToSend> {
    let mut out = Vec::new();
    while let Some(s) = q.next_to_send() {
        q.sent();
        out.push(s);
    }
    out
}

/// (topic, payload) of each message, for compact assertions.
fn brief(sent: &[ToSend]) -> Vec<(String, String)> {
    sent.iter()
        .map(|s| {
            (
                s.message.topic.clone(),
                String::from_utf8_lossy(&s.message.payload).into_owned(),
            )
        })
        .collect()
}

fn pair(topic: &str, payload: &str) -> (String, String) {
    (topic.to_owned(), payload.to_owned())
}

/// Connects and lets the connect-time messages through (packet ids from 100).
fn connected_and_idle(q: &mut Queue) {
    q.connected();
    let qos = q.settings.qos;
    let mut pkid = 100;
    while q.pending() > 0 {
        for _ in drain(q) {
            q.written(pkid);
            q.acked(pkid, qos);
            pkid += 1;
        }
    }
}

/// Writes and acknowledges (PUBACK) everything in flight, packet ids from 1.
fn ack_all(q: &mut Queue, n: usize) -> Vec<Tag> {
    let mut done = Vec::new();
    for pkid in 1..=n as u16 {
        assert_eq!(q.written(pkid), None);
    }
    for pkid in 1..=n as u16 {
        done.extend(q.acked(pkid, QoS::AtLeastOnce));
    }
    done
}

#[test]
fn nothing_is_sent_while_disconnected() {
    let mut q = queue();
    assert_eq!(
        q.accept(&w("person"), true, T0, payload(1)).map(|a| a.id),
        Ok(0)
    );
    assert_eq!(
        q.accept(&w("person"), false, T0, payload(2)).map(|a| a.id),
        Ok(1)
    );
    assert!(!q.is_connected());
    assert_eq!(q.next_to_send(), None);
    q.sent();
    assert_eq!(q.queued(), 2);
    assert_eq!(q.pending(), 3, "two events and the person's state");
    assert!(
        !q.offer_stats("cam0", b"{}".to_vec()),
        "statistics are not kept offline"
    );
}

#[test]
fn a_connect_announces_then_replays_then_sends_states() {
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 4, 16, true));
    q.accept(&w("person"), true, T0, payload(1)).unwrap();
    q.accept(&w("person"), false, T0, payload(2)).unwrap();
    q.connected();
    let sent = drain(&mut q);
    let disco = |l: &str| format!("homeassistant/binary_sensor/edgeclip_cam0/{l}/config");
    let topics: Vec<String> = sent.iter().map(|s| s.message.topic.clone()).collect();
    assert_eq!(
        topics,
        vec![
            "edgeclip/pi4/availability".to_owned(),
            disco("person"),
            disco("cat"),
            "edgeclip/cam0/events".to_owned(),
            "edgeclip/cam0/events".to_owned(),
            "edgeclip/cam0/cat/state".to_owned(),
            "edgeclip/cam0/person/state".to_owned(),
        ]
    );
    assert_eq!(sent[0].message.payload, b"online");
    assert_eq!(
        sent[1].message.payload,
        Topics::new("edgeclip", "pi4", "homeassistant")
            .discovery_payload(&w("person"))
            .into_bytes()
    );
    assert_eq!(sent[3].tag, Tag::Event(0));
    assert_eq!(sent[4].tag, Tag::Event(1));
    assert_eq!(
        sent[3].message.payload,
        replayed(&payload(1)),
        "accepted while the broker was away"
    );
    assert_eq!(sent[5].message.payload, b"OFF");
    assert_eq!(sent[6].message.payload, b"OFF", "the last event ended it");
    for s in &sent {
        assert_eq!(s.message.qos, QoS::AtLeastOnce);
        let is_event = matches!(s.tag, Tag::Event(_));
        assert_eq!(s.message.retain, !is_event, "{s:?}");
    }
    assert_eq!(q.next_to_send(), None);
}

#[test]
fn next_to_send_repeats_until_sent() {
    let mut q = queue();
    q.accept(&w("person"), true, T0, payload(1)).unwrap();
    q.connected();
    let first = q.next_to_send().unwrap();
    assert_eq!(q.next_to_send(), Some(first.clone()));
    q.sent();
    assert_ne!(q.next_to_send(), Some(first));
}

#[test]
fn the_window_bounds_what_is_in_flight() {
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 10, 3, false));
    connected_and_idle(&mut q);
    for f in 0..5 {
        q.accept(&w("person"), f % 2 == 0, T0, payload(f)).unwrap();
    }
    let sent = drain(&mut q);
    assert_eq!(
        sent.iter().map(|s| s.tag).collect::<Vec<_>>(),
        vec![Tag::Event(0), Tag::Event(1), Tag::Event(2)]
    );
    // One acknowledgement makes room for one more.
    q.written(1);
    q.written(2);
    assert_eq!(q.acked(1, QoS::AtLeastOnce), Some(Tag::Event(0)));
    assert_eq!(
        drain(&mut q).iter().map(|s| s.tag).collect::<Vec<_>>(),
        vec![Tag::Event(3)]
    );
}

#[test]
fn an_event_leaves_the_queue_when_acknowledged() {
    let mut q = queue();
    connected_and_idle(&mut q);
    q.accept(&w("person"), true, T0, payload(1)).unwrap();
    assert_eq!(drain(&mut q).len(), 2, "the event, the state");
    assert_eq!(q.queued(), 1);
    assert_eq!(q.written(7), None);
    assert_eq!(q.written(8), None);
    // A PUBREC or an unknown packet id settles nothing.
    assert_eq!(q.acked(7, QoS::ExactlyOnce), None);
    assert_eq!(q.acked(42, QoS::AtLeastOnce), None);
    assert_eq!(q.acked(7, QoS::AtLeastOnce), Some(Tag::Event(0)));
    assert_eq!(q.queued(), 0);
    assert_eq!(q.delivered(), 1);
    // A second acknowledgement of the same packet settles nothing.
    assert_eq!(q.acked(7, QoS::AtLeastOnce), None);
    assert_eq!(q.acked(8, QoS::AtLeastOnce), Some(Tag::Other));
    assert_eq!(q.pending(), 0);
    assert_eq!(q.delivered(), 1);
}

#[test]
fn qos_0_completes_when_written() {
    let mut q = Queue::new(settings(QoS::AtMostOnce, 4, 8, false));
    connected_and_idle(&mut q);
    q.accept(&w("person"), true, T0, payload(1)).unwrap();
    assert_eq!(drain(&mut q).len(), 2);
    assert_eq!(q.written(0), Some(Tag::Event(0)));
    assert_eq!(q.written(0), Some(Tag::Other));
    assert_eq!(q.written(0), None, "nothing else in flight");
    assert_eq!(q.pending(), 0);
    assert_eq!(q.delivered(), 1);
}

#[test]
fn qos_2_completes_on_pubrec() {
    let mut q = Queue::new(settings(QoS::ExactlyOnce, 4, 8, false));
    connected_and_idle(&mut q);
    q.accept(&w("person"), true, T0, payload(1)).unwrap();
    drain(&mut q);
    for pkid in 1..=2 {
        q.written(pkid);
    }
    assert_eq!(
        q.acked(1, QoS::AtLeastOnce),
        None,
        "a PUBACK is not a PUBREC"
    );
    assert_eq!(q.acked(1, QoS::ExactlyOnce), Some(Tag::Event(0)));
    assert_eq!(q.delivered(), 1);
}

#[test]
fn statistics_are_best_effort_and_bounded() {
    let mut q = Queue::new(settings(QoS::ExactlyOnce, 4, 1, false));
    q.connected();
    // `online` waits in front; seven statistics fit behind it.
    for _ in 0..7 {
        assert!(q.offer_stats("cam0", b"{}".to_vec()));
    }
    assert!(!q.offer_stats("cam0", b"{}".to_vec()));
    let s = q.next_to_send().unwrap();
    assert_eq!(s.message.payload, b"online");
    q.sent();
    q.written(1);
    q.acked(1, QoS::ExactlyOnce);
    let s = q.next_to_send().unwrap();
    assert_eq!(s.message.topic, "edgeclip/cam0/stats");
    assert_eq!(s.message.qos, QoS::AtMostOnce, "whatever mqtt.qos says");
    assert!(!s.message.retain);
    q.sent();
    assert_eq!(q.written(0), Some(Tag::Other));
    // Lost with the connection, not replayed.
    q.disconnected();
    q.connected();
    let sent = drain(&mut q);
    assert_eq!(
        brief(&sent),
        vec![pair("edgeclip/pi4/availability", "online")]
    );
}

#[test]
fn a_full_queue_drops_the_oldest_episode_whole_and_states_follow_every_event() {
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 3, 8, false));
    q.accept(&w("person"), true, T0, payload(0)).unwrap();
    q.accept(&w("cat"), true, T0, payload(1)).unwrap();
    q.accept(&w("person"), false, T0, payload(2)).unwrap();
    // Full: the oldest start (person's) goes with its end; the cat's start stays.
    let a = q.accept(&w("cat"), false, T0, payload(3)).unwrap();
    assert_eq!(
        a,
        Accepted {
            id: 3,
            evicted: vec![0, 2]
        }
    );
    assert_eq!((q.queued(), q.dropped(), q.dropped_full()), (2, 2, 2));
    q.accept(&w("person"), true, T0, payload(4)).unwrap();
    // Full again: the cat's episode is the oldest.
    let a = q.accept(&w("person"), false, T0, payload(5)).unwrap();
    assert_eq!(a.evicted, vec![1, 3]);
    assert_eq!(q.dropped(), 4);
    q.connected();
    let sent = drain(&mut q);
    let events: Vec<Tag> = sent
        .iter()
        .map(|s| s.tag)
        .filter(|t| *t != Tag::Other)
        .collect();
    assert_eq!(
        events,
        vec![Tag::Event(4), Tag::Event(5)],
        "the newest kept, in order"
    );
    assert!(brief(&sent).contains(&pair("edgeclip/cam0/person/state", "OFF")));
    assert!(brief(&sent).contains(&pair("edgeclip/cam0/cat/state", "OFF")));
    ack_all(&mut q, sent.len());
    assert_eq!(
        q.accept(&w("cat"), true, T0, payload(6)).map(|a| a.id),
        Ok(6)
    );
}

#[test]
fn a_start_dropped_while_its_label_is_active_takes_its_end_with_it() {
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 2, 8, false));
    q.accept(&w("person"), true, T0, payload(0)).unwrap();
    q.accept(&w("cat"), true, T0, payload(1)).unwrap();
    let a = q.accept(&w("car"), true, T0, payload(2)).unwrap();
    assert_eq!(
        a.evicted,
        vec![0],
        "the person's start; its end is still to come"
    );
    assert_eq!(
        q.accept(&w("person"), false, T0, payload(3)),
        Err(Refused::StartDropped {
            dropped: 2,
            evicted: vec![]
        })
    );
    assert_eq!(q.queued(), 2);
    // The state is right anyway; the next person episode is kept.
    let a = q.accept(&w("person"), true, T0, payload(4)).unwrap();
    assert_eq!(a.evicted, vec![1]);
    q.connected();
    let sent = drain(&mut q);
    assert!(brief(&sent).contains(&pair("edgeclip/cam0/person/state", "ON")));
}

#[test]
fn only_ends_waiting_the_oldest_end_goes_and_in_flight_events_are_never_dropped() {
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 2, 8, false));
    connected_and_idle(&mut q);
    q.accept(&w("person"), true, T0, payload(0)).unwrap();
    q.accept(&w("cat"), true, T0, payload(1)).unwrap();
    assert_eq!(
        drain(&mut q).len(),
        2 + 2,
        "both starts and both states in flight"
    );
    // Full, everything in flight: the new start is dropped, and its end with it.
    assert_eq!(
        q.accept(&w("car"), true, T0, payload(2)),
        Err(Refused::Full {
            queued: 2,
            dropped: 1
        })
    );
    assert_eq!(
        q.accept(&w("car"), false, T0, payload(3)),
        Err(Refused::StartDropped {
            dropped: 2,
            evicted: vec![]
        })
    );
    ack_all(&mut q, 4);
    q.disconnected();
    q.accept(&w("person"), false, T0, payload(4)).unwrap();
    q.accept(&w("cat"), false, T0, payload(5)).unwrap();
    let a = q.accept(&w("car"), true, T0, payload(6)).unwrap();
    assert_eq!(
        a.evicted,
        vec![2],
        "no start waits: the oldest end (the person's)"
    );
    assert_eq!(q.dropped(), 3);
}

#[test]
fn events_past_the_age_limit_are_dropped_before_sending_with_their_ends() {
    let mut set = settings(QoS::AtLeastOnce, 10, 8, false);
    set.max_age = Some(Duration::from_secs(60));
    let mut q = Queue::new(set);
    let at = |s: u64| T0 + Duration::from_secs(s);
    q.accept(&w("person"), true, at(0), payload(0)).unwrap();
    q.accept(&w("cat"), true, at(10), payload(1)).unwrap();
    q.accept(&w("person"), false, at(100), payload(2)).unwrap();
    q.accept(&w("cat"), false, at(100), payload(3)).unwrap();
    assert_eq!(
        q.expire(at(60)),
        Vec::<u64>::new(),
        "60 s old is not past 60 s"
    );
    // The person's start is too old: its (young) end goes with it.
    assert_eq!(q.expire(at(61)), vec![0, 2]);
    assert_eq!((q.dropped(), q.dropped_old(), q.queued()), (2, 2, 2));
    // The cat's start too, later.
    assert_eq!(q.expire(at(71)), vec![1, 3]);
    // A start expired while its label is active: its end is dropped on arrival.
    q.accept(&w("car"), true, at(100), payload(4)).unwrap();
    assert_eq!(q.expire(at(200)), vec![4]);
    assert_eq!(
        q.accept(&w("car"), false, at(200), payload(5)),
        Err(Refused::StartDropped {
            dropped: 6,
            evicted: vec![]
        })
    );
    assert_eq!(q.dropped_old(), 6);
    // In flight is never expired.
    q.connected();
    q.accept(&w("car"), true, at(300), payload(6)).unwrap();
    drain(&mut q);
    assert_eq!(q.expire(at(1000)), Vec::<u64>::new());
    // No limit, no expiry.
    let mut q = queue();
    q.accept(&w("person"), true, T0, payload(0)).unwrap();
    assert!(q.expire(at(1_000_000)).is_empty());
}

#[test]
fn an_event_that_waited_for_a_reconnect_is_marked_replayed() {
    assert_eq!(
        replayed(b"{\"frame\":1}"),
        b"{\"frame\":1,\"replayed\":true}"
    );
    assert_eq!(replayed(b"{}"), b"{\"replayed\":true}");
    let mut q = queue();
    connected_and_idle(&mut q);
    q.accept(&w("person"), true, T0, payload(0)).unwrap();
    q.accept(&w("person"), false, T0, payload(1)).unwrap();
    let sent = drain(&mut q);
    assert_eq!(
        sent[0].message.payload,
        payload(0),
        "first try, live: no mark"
    );
    // Event 0 delivered; event 1 in flight when the connection drops.
    q.written(1);
    q.acked(1, QoS::AtLeastOnce);
    q.disconnected();
    q.accept(&w("person"), true, T0, payload(2)).unwrap();
    q.connected();
    let sent = drain(&mut q);
    let events: Vec<&[u8]> = sent
        .iter()
        .filter(|s| matches!(s.tag, Tag::Event(_)))
        .map(|s| s.message.payload.as_slice())
        .collect();
    assert_eq!(events, vec![replayed(&payload(1)), replayed(&payload(2))]);
    // Accepted while connected in the new session: live again.
    q.accept(&w("person"), false, T0, payload(3)).unwrap();
    assert_eq!(drain(&mut q)[0].message.payload, payload(3));
}

#[test]
fn the_camera_s_availability_is_retained_republished_and_offline_at_close() {
    let mut q = queue();
    q.connected();
    let sent = drain(&mut q);
    assert!(
        !sent
            .iter()
            .any(|s| s.message.topic == "edgeclip/cam0/availability"),
        "unknown until the daemon says"
    );
    q.camera_status("cam0", true);
    let sent = drain(&mut q);
    assert_eq!(
        brief(&sent),
        vec![pair("edgeclip/cam0/availability", "online")]
    );
    assert!(sent[0].message.retain);
    q.camera_status("cam0", false);
    q.disconnected();
    q.connected();
    let sent = brief(&drain(&mut q));
    assert_eq!(
        sent[..2],
        [
            pair("edgeclip/pi4/availability", "online"),
            pair("edgeclip/cam0/availability", "offline")
        ]
    );
    q.camera_status("cam0", true);
    q.close();
    q.camera_status("cam0", false);
    q.say_offline();
    let sent = brief(&drain(&mut q));
    assert_eq!(
        sent[sent.len() - 2..],
        [
            pair("edgeclip/cam0/availability", "offline"),
            pair("edgeclip/pi4/availability", "offline")
        ]
    );
}

#[test]
fn a_reload_announces_new_labels_and_deletes_removed_ones() {
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 4, 16, true));
    connected_and_idle(&mut q);
    let disco = |l: &str| format!("homeassistant/binary_sensor/edgeclip_cam0/{l}/config");
    q.set_watched(&[w("person"), w("dog")]);
    let sent = brief(&drain(&mut q));
    let topics = Topics::new("edgeclip", "pi4", "homeassistant");
    assert_eq!(
        sent,
        vec![
            (disco("dog"), topics.discovery_payload(&w("dog"))),
            (disco("cat"), String::new()),
            pair("edgeclip/cam0/dog/state", "OFF"),
        ]
    );
    // On the next connect too (a broker without persistence forgot them).
    q.disconnected();
    q.connected();
    let sent = brief(&drain(&mut q));
    assert!(sent.contains(&(disco("dog"), topics.discovery_payload(&w("dog")))));
    assert!(sent.contains(&(disco("cat"), String::new())));
    assert!(!sent.contains(&(disco("cat"), topics.discovery_payload(&w("cat")))));
    // Back again: announced, no longer deleted.
    q.set_watched(&[w("person"), w("cat")]);
    q.disconnected();
    q.connected();
    let sent = brief(&drain(&mut q));
    assert!(sent.contains(&(disco("cat"), topics.discovery_payload(&w("cat")))));
    assert!(sent.contains(&(disco("dog"), String::new())));
    assert!(!sent.contains(&(disco("cat"), String::new())));
}

#[test]
fn closing_refuses_events_and_stops_announcing_online() {
    let mut q = queue();
    q.accept(&w("person"), true, T0, payload(0)).unwrap();
    q.close();
    assert!(q.is_closing());
    assert_eq!(
        q.accept(&w("person"), false, T0, payload(1)),
        Err(Refused::Closed)
    );
    assert_eq!(q.dropped(), 0, "a refusal at close is not a drop");
    q.connected();
    assert!(!q.offer_stats("cam0", b"{}".to_vec()));
    let sent = drain(&mut q);
    assert_eq!(
        brief(&sent),
        vec![
            pair("edgeclip/cam0/events", "{\"frame\":0,\"replayed\":true}"),
            pair("edgeclip/cam0/cat/state", "OFF"),
            pair("edgeclip/cam0/person/state", "ON"),
        ]
    );
}

#[test]
fn offline_goes_before_what_was_not_yet_sent() {
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 4, 1, false));
    q.connected();
    q.accept(&w("person"), true, T0, payload(0)).unwrap();
    q.close();
    assert!(q.control_or_inflight(), "online waits");
    drain(&mut q); // online
    q.say_offline();
    q.written(1);
    q.acked(1, QoS::AtLeastOnce);
    for (pkid, topic) in [
        (2, "edgeclip/cam0/availability"),
        (3, "edgeclip/pi4/availability"),
    ] {
        let s = q.next_to_send().unwrap();
        assert_eq!(
            brief(&[s]),
            vec![pair(topic, "offline")],
            "before the queued event"
        );
        q.sent();
        q.written(pkid);
        q.acked(pkid, QoS::AtLeastOnce);
    }
    assert!(!q.control_or_inflight());
    assert_eq!(q.queued(), 1);
}

#[test]
fn a_disconnect_sends_what_was_in_flight_again_in_order() {
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 10, 4, false));
    connected_and_idle(&mut q);
    for f in 0..6 {
        q.accept(&w("person"), f % 2 == 0, T0, payload(f)).unwrap();
    }
    let sent = drain(&mut q);
    assert_eq!(sent.len(), 4);
    for pkid in 1..=3 {
        q.written(pkid);
    }
    assert_eq!(q.acked(1, QoS::AtLeastOnce), Some(Tag::Event(0)));
    q.disconnected();
    assert_eq!(q.next_to_send(), None);
    // Acknowledgements of the old session settle nothing.
    assert_eq!(q.acked(2, QoS::AtLeastOnce), None);
    assert_eq!(q.queued(), 5);
    q.connected();
    let tags: Vec<Tag> = drain(&mut q).iter().map(|s| s.tag).collect();
    assert_eq!(
        tags,
        vec![Tag::Other, Tag::Event(1), Tag::Event(2), Tag::Event(3)]
    );
}

#[test]
fn an_event_acknowledged_out_of_order_is_not_sent_again() {
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 10, 8, false));
    connected_and_idle(&mut q);
    for f in 0..3 {
        q.accept(&w("person"), true, T0, payload(f)).unwrap();
    }
    drain(&mut q); // events 0, 1, 2 and the state
    for pkid in 1..=4 {
        q.written(pkid);
    }
    assert_eq!(q.acked(2, QoS::AtLeastOnce), Some(Tag::Event(1)));
    assert_eq!(q.queued(), 3, "event 1 waits for event 0");
    assert_eq!(q.delivered(), 0);
    q.disconnected();
    q.connected();
    let tags: Vec<Tag> = drain(&mut q).iter().map(|s| s.tag).collect();
    assert_eq!(
        tags,
        vec![
            Tag::Other,
            Tag::Event(0),
            Tag::Event(2),
            Tag::Other,
            Tag::Other
        ]
    );
    for pkid in 1..=5 {
        q.written(pkid);
    }
    assert_eq!(q.acked(2, QoS::AtLeastOnce), Some(Tag::Event(0)));
    assert_eq!(q.queued(), 1, "events 0 and 1 leave together");
    assert_eq!(q.delivered(), 2);
    assert_eq!(q.acked(3, QoS::AtLeastOnce), Some(Tag::Event(2)));
    assert_eq!(q.delivered(), 3);
}

#[test]
fn a_state_changed_during_the_replay_is_sent_once_with_its_last_value() {
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 10, 2, false));
    q.accept(&w("person"), true, T0, payload(0)).unwrap();
    q.connected();
    let s = drain(&mut q);
    assert_eq!(s.len(), 2, "online and event 0");
    q.accept(&w("person"), false, T0, payload(1)).unwrap();
    q.accept(&w("cat"), true, T0, payload(2)).unwrap();
    let mut all = s;
    for pkid in 1..=20 {
        q.written(pkid);
        q.acked(pkid, QoS::AtLeastOnce);
        all.extend(drain(&mut q));
    }
    assert_eq!(
        brief(&all),
        vec![
            pair("edgeclip/pi4/availability", "online"),
            pair("edgeclip/cam0/events", "{\"frame\":0,\"replayed\":true}"),
            pair("edgeclip/cam0/events", "{\"frame\":1}"),
            pair("edgeclip/cam0/events", "{\"frame\":2}"),
            pair("edgeclip/cam0/cat/state", "ON"),
            pair("edgeclip/cam0/person/state", "OFF"),
        ]
    );
    assert_eq!(q.pending(), 0);
}

#[test]
fn an_unknown_label_gets_a_state_too() {
    let mut q = queue();
    q.accept(&w("dog"), true, T0, payload(0)).unwrap();
    q.connected();
    let sent = drain(&mut q);
    assert!(brief(&sent).contains(&pair("edgeclip/cam0/dog/state", "ON")));
    q.disconnected();
    q.connected();
    let sent = drain(&mut q);
    assert!(brief(&sent).contains(&pair("edgeclip/cam0/dog/state", "ON")));
}

// ---------------------------------------------------------------------------------------------
// Properties: the queue against a model of rumqttc and a broker, through any interleaving of
// accepts, sends, writes, acknowledgements, disconnects and reconnects.

/// One step of the world around the queue.
#[derive(Debug, Clone)]
enum Step {
    /// The next event for `many()[label]` (a start when it is off, else an end: the trigger
    /// alternates).
    Accept { label: usize },
    /// Statistics.
    Stats,
    /// rumqttc takes up to `n` messages (its request channel may be full).
    Hand(usize),
    /// rumqttc writes up to `n` of the messages it took.
    Write(usize),
    /// The broker acknowledges one written message (any of them).
    Ack(usize),
    /// The connection drops.
    Disconnect,
    /// The connection comes back.
    Connect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..many().len()).prop_map(|label| Step::Accept { label }),
        1 => Just(Step::Stats),
        3 => (1usize..6).prop_map(Step::Hand),
        3 => (1usize..6).prop_map(Step::Write),
        3 => any::<usize>().prop_map(Step::Ack),
        1 => Just(Step::Disconnect),
        1 => Just(Step::Connect),
    ]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// rumqttc and a broker, as the queue sees them, plus what the properties need to know.
struct World {
    q: Queue,
    window: usize,
    capacity: usize,
    /// Handed to rumqttc, not yet written.
    requests: VecDeque<ToSend>,
    /// Written, waiting for the broker's acknowledgement: (pkid, qos, tag).
    unacked: Vec<(u16, QoS, Tag)>,
    next_pkid: u16,
    /// What the broker keeps retained.
    retained: BTreeMap<String, Vec<u8>>,
    /// Event ids handed to rumqttc, per session.
    sessions: Vec<Vec<u64>>,
    /// Event ids the queue reported as completed, in order.
    completed: Vec<u64>,
    /// Ids of accepted events, and the last state accepted per watched thing.
    accepted: Vec<u64>,
    last_state: BTreeMap<Watched, bool>,
    /// Ids dropped for room, and events refused (no id).
    evicted: BTreeSet<u64>,
    refused: u64,
    /// (watched thing, start) of every accepted event, by id.
    kinds: BTreeMap<u64, (Watched, bool)>,
}

impl World {
    fn new(qos: QoS, capacity: usize, window: usize, discovery: bool) -> World {
        let q = Queue::new(Settings {
            watched: many(),
            ..settings(qos, capacity, window, discovery)
        });
        World {
            q,
            window,
            capacity,
            requests: VecDeque::new(),
            unacked: Vec::new(),
            next_pkid: 0,
            retained: BTreeMap::new(),
            sessions: Vec::new(),
            completed: Vec::new(),
            accepted: Vec::new(),
            last_state: many().into_iter().map(|x| (x, false)).collect(),
            evicted: BTreeSet::new(),
            refused: 0,
            kinds: BTreeMap::new(),
        }
    }

    fn complete(&mut self, tag: Option<Tag>) {
        if let Some(Tag::Event(id)) = tag {
            self.completed.push(id);
        }
    }

    /// Applies one step; checks the invariants that hold after every step.
    fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Accept { label } => {
                let label = &many()[label];
                let on = !self.last_state.get(label).copied().unwrap_or(false);
                let before = self.q.queued();
                let dropped = self.q.dropped();
                let result = self.q.accept(label, on, T0, payload(0));
                // The state follows every event, kept or not.
                self.last_state.insert(label.clone(), on);
                match result {
                    Ok(Accepted { id, evicted }) => {
                        prop_assert_eq!(evicted.is_empty(), before < self.capacity);
                        prop_assert!(evicted.len() <= 2);
                        prop_assert_eq!(self.q.dropped(), dropped + evicted.len() as u64);
                        prop_assert!(id >= self.accepted.last().map_or(0, |l| l + 1));
                        self.accepted.push(id);
                        self.kinds.insert(id, (label.clone(), on));
                        self.evicted.extend(evicted);
                    }
                    Err(Refused::Full { queued, dropped: d }) => {
                        prop_assert_eq!(before, self.capacity);
                        prop_assert_eq!(queued, self.capacity);
                        prop_assert_eq!(d, dropped + 1);
                        self.refused += 1;
                    }
                    Err(Refused::StartDropped {
                        dropped: d,
                        evicted,
                    }) => {
                        prop_assert!(!on);
                        prop_assert_eq!(d, dropped + 1 + evicted.len() as u64);
                        self.evicted.extend(evicted);
                        self.refused += 1;
                    }
                    Err(Refused::Closed) => prop_assert!(false, "never closed here"),
                }
            }
            Step::Stats => {
                self.q.offer_stats("cam0", b"{}".to_vec());
            }
            Step::Hand(n) => {
                for _ in 0..n {
                    let Some(s) = self.q.next_to_send() else {
                        break;
                    };
                    prop_assert!(self.q.is_connected(), "sent while disconnected");
                    if let Tag::Event(id) = s.tag {
                        self.sessions
                            .last_mut()
                            .expect("a session after a connect")
                            .push(id);
                    }
                    self.q.sent();
                    self.requests.push_back(s);
                }
            }
            Step::Write(n) => {
                for _ in 0..n {
                    let Some(s) = self.requests.pop_front() else {
                        break;
                    };
                    let qos = s.message.qos;
                    let pkid = if qos == QoS::AtMostOnce {
                        0
                    } else {
                        // rumqttc's ids: 1..=100, never one still waiting.
                        loop {
                            self.next_pkid = self.next_pkid % 100 + 1;
                            if !self.unacked.iter().any(|u| u.0 == self.next_pkid) {
                                break self.next_pkid;
                            }
                        }
                    };
                    if s.message.retain {
                        self.retained
                            .insert(s.message.topic.clone(), s.message.payload.clone());
                    }
                    let done = self.q.written(pkid);
                    if qos == QoS::AtMostOnce {
                        prop_assert_eq!(done, Some(s.tag));
                    } else {
                        prop_assert_eq!(done, None);
                        self.unacked.push((pkid, qos, s.tag));
                    }
                    self.complete(done);
                }
            }
            Step::Ack(i) => {
                if !self.unacked.is_empty() {
                    let (pkid, qos, tag) = self.unacked.remove(i % self.unacked.len());
                    let done = self.q.acked(pkid, qos);
                    prop_assert_eq!(done, Some(tag));
                    self.complete(done);
                }
            }
            Step::Disconnect => {
                if self.q.is_connected() {
                    self.q.disconnected();
                    self.requests.clear();
                    self.unacked.clear();
                }
            }
            Step::Connect => {
                if !self.q.is_connected() {
                    self.q.connected();
                    self.sessions.push(Vec::new());
                }
            }
        }
        let in_flight = self.requests.len() + self.unacked.len();
        prop_assert!(in_flight <= self.window, "{in_flight} in flight");
        prop_assert!(self.q.queued() <= self.capacity);
        prop_assert_eq!(
            self.q.queued() as u64 + self.q.delivered() + self.evicted.len() as u64,
            self.accepted.len() as u64
        );
        prop_assert_eq!(self.q.dropped(), self.evicted.len() as u64 + self.refused);
        Ok(())
    }

    /// Connects and lets everything through.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        self.apply(&Step::Connect)?;
        for _ in 0..10_000 {
            if self.q.pending() == 0 {
                return Ok(());
            }
            self.apply(&Step::Hand(self.window))?;
            self.apply(&Step::Write(self.window))?;
            while !self.unacked.is_empty() {
                self.apply(&Step::Ack(0))?;
            }
        }
        prop_assert!(false, "never settled: {} pending", self.q.pending());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Events leave in accept order within every session, each session starting again from
    /// the oldest unacknowledged event; every accepted event is completed exactly once, none is
    /// lost however often the connection drops; every refusal is counted; and once the queue
    /// settles, the broker retains each label's last accepted state and `online`.
    #[test]
    fn delivery_survives_any_interleaving(
        steps in proptest::collection::vec(step(), 0..200),
        qos in qos(),
        capacity in 1usize..12,
        window in 1usize..6,
        discovery in any::<bool>(),
    ) {
        let mut w = World::new(qos, capacity, window, discovery);
        for s in &steps {
            w.apply(s)?;
        }
        w.settle()?;

        // No loss but the counted drops: every accepted event completed exactly once or
        // dropped for room, never both.
        let mut completed = w.completed.clone();
        completed.sort_unstable();
        prop_assert!(completed.windows(2).all(|p| p[0] < p[1]), "completed twice");
        prop_assert!(completed.iter().all(|id| !w.evicted.contains(id)));
        let mut all: Vec<u64> = completed.iter().chain(&w.evicted).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(&all, &w.accepted);
        prop_assert_eq!(w.q.queued(), 0);
        prop_assert_eq!(w.q.dropped(), w.evicted.len() as u64 + w.refused);

        // Order: within a session, ids increase; every completed event was sent.
        let mut sent_ever: BTreeSet<u64> = BTreeSet::new();
        for session in &w.sessions {
            prop_assert!(session.windows(2).all(|p| p[0] < p[1]), "{:?}", session);
            sent_ever.extend(session.iter().copied());
        }
        prop_assert!(completed.iter().all(|id| sent_ever.contains(id)));

        // What a consumer gets per label: every end right after its start (episodes are
        // dropped whole; only a start may lose its end).
        for label in &many() {
            let kept: Vec<bool> = completed
                .iter()
                .filter_map(|id| w.kinds.get(id))
                .filter(|(l, _)| l == label)
                .map(|(_, start)| *start)
                .collect();
            for (i, start) in kept.iter().enumerate() {
                prop_assert!(
                    *start || (i > 0 && kept[i - 1]),
                    "{:?}: an end without its start in {:?}", label, kept
                );
            }
        }

        // Retained state equals the last accepted state per label.
        let topics = Topics::new("edgeclip", "pi4", "homeassistant");
        for (label, on) in &w.last_state {
            let want: &[u8] = if *on { b"ON" } else { b"OFF" };
            prop_assert_eq!(
                w.retained.get(&topics.state(label)).map(Vec::as_slice),
                Some(want),
                "{:?}", label
            );
        }
        prop_assert_eq!(
            w.retained.get(&topics.availability).map(Vec::as_slice),
            Some(&b"online"[..])
        );
        for x in &many() {
            prop_assert_eq!(w.retained.contains_key(&topics.discovery(x)), discovery);
        }
        prop_assert!(!w.retained.contains_key(&topics.events("cam0")));
        prop_assert!(!w.retained.contains_key(&topics.events("cam1")));
    }

    /// A session resends from the oldest event not yet completed, and sends an event again
    /// only if it was not completed before.
    #[test]
    fn a_session_replays_exactly_the_unfinished_events(
        steps in proptest::collection::vec(step(), 0..200),
        qos in qos(),
        window in 1usize..6,
    ) {
        let mut w = World::new(qos, 8, window, false);
        for s in &steps {
            let completed_before: BTreeSet<u64> = w.completed.iter().copied().collect();
            let session_len = w.sessions.last().map_or(0, Vec::len);
            w.apply(s)?;
            let gone = &w.evicted;
            let Some(session) = w.sessions.last() else { continue };
            for &id in &session[session_len.min(session.len())..] {
                // Never an event already completed.
                prop_assert!(!completed_before.contains(&id), "event {} sent again", id);
                // Never past an older event that is neither completed, dropped nor sent this
                // session.
                for older in w.accepted.iter().copied().filter(|&o| o < id) {
                    prop_assert!(
                        completed_before.contains(&older)
                            || session.contains(&older)
                            || gone.contains(&older),
                        "event {} sent before event {}", id, older
                    );
                }
            }
        }
    }

    /// Drops are counted exactly and only when the bound is reached, whatever the
    /// connection does.
    #[test]
    fn drops_are_counted_exactly(
        steps in proptest::collection::vec(step(), 0..300),
        capacity in 1usize..5,
    ) {
        let mut w = World::new(QoS::AtLeastOnce, capacity, 3, false);
        for s in &steps {
            w.apply(s)?;
        }
        prop_assert_eq!(w.q.dropped(), w.refused + w.evicted.len() as u64);
        let offered = steps.iter().filter(|s| matches!(s, Step::Accept { .. })).count() as u64;
        prop_assert_eq!(w.accepted.len() as u64 + w.refused, offered);
    }
}

#[test]
fn snapshots_go_after_the_states_retained_latest_per_label() {
    let mut q = queue();
    connected_and_idle(&mut q);
    q.accept(&w("person"), true, T0, payload(1)).unwrap();
    assert!(q.offer_snapshot(&w("person"), b"\xFF\xD8old".to_vec()));
    assert!(q.offer_snapshot(&w("person"), b"\xFF\xD8new".to_vec()));
    assert!(q.offer_snapshot(&w("cat"), b"\xFF\xD8cat".to_vec()));
    assert_eq!(
        q.pending(),
        1 + 1 + 2,
        "the event, its state, two snapshots"
    );
    let sent = drain(&mut q);
    assert_eq!(
        brief(&sent),
        vec![
            pair("edgeclip/cam0/events", "{\"frame\":1}"),
            pair("edgeclip/cam0/person/state", "ON"),
            pair("edgeclip/cam0/cat/snapshot", "\u{FFFD}\u{FFFD}cat"),
            pair("edgeclip/cam0/person/snapshot", "\u{FFFD}\u{FFFD}new"),
        ],
        "only the latest of a label is sent"
    );
    assert!(
        sent[2..]
            .iter()
            .all(|s| s.message.retain && s.tag == Tag::Other)
    );
    assert_eq!(ack_all(&mut q, 4).len(), 4);
    assert_eq!(q.pending(), 0);
    assert_eq!(q.next_to_send(), None);
}

#[test]
fn snapshots_wait_for_the_broker_and_are_sent_again_on_each_connect() {
    let mut q = queue();
    assert!(q.offer_snapshot(&w("person"), b"\xFF\xD8a".to_vec()));
    assert_eq!(q.next_to_send(), None, "nothing while disconnected");
    connected_and_idle(&mut q);
    q.disconnected();
    q.connected();
    let topics: Vec<String> = drain(&mut q)
        .iter()
        .map(|s| s.message.topic.clone())
        .collect();
    assert_eq!(
        topics.last().map(String::as_str),
        Some("edgeclip/cam0/person/snapshot"),
        "{topics:?}"
    );
    // In flight when the connection drops: sent again.
    q.disconnected();
    q.connected();
    let again = drain(&mut q);
    assert!(
        again
            .iter()
            .any(|s| s.message.topic == "edgeclip/cam0/person/snapshot")
    );
    q.close();
    assert!(
        !q.offer_snapshot(&w("person"), b"\xFF\xD8late".to_vec()),
        "closing"
    );
}

#[test]
fn discovery_announces_an_image_per_label_when_snapshots_are_on() {
    let mut with = settings(QoS::AtLeastOnce, 4, 16, true);
    with.snapshots = true;
    let mut q = Queue::new(with);
    q.connected();
    let topics: Vec<String> = drain(&mut q)
        .iter()
        .map(|s| s.message.topic.clone())
        .collect();
    for l in ["person", "cat"] {
        assert!(
            topics.contains(&format!("homeassistant/image/edgeclip_cam0/{l}/config")),
            "{topics:?}"
        );
    }
    let mut q = Queue::new(settings(QoS::AtLeastOnce, 4, 16, true));
    q.connected();
    assert!(
        !drain(&mut q)
            .iter()
            .any(|s| s.message.topic.contains("/image/")),
        "no image entity without snapshots"
    );
}

/// A queue watching [`many`]: two cameras, zones, discovery on.
fn many_queue(capacity: usize) -> Queue {
    Queue::new(Settings {
        watched: many(),
        ..settings(QoS::AtLeastOnce, capacity, 64, true)
    })
}

#[test]
fn two_cameras_and_zones_share_one_connection_each_with_its_own_topics() {
    let mut q = many_queue(8);
    q.camera_status("cam1", true);
    q.accept(&wz("cam1", "driveway", "car"), true, T0, payload(1))
        .unwrap();
    q.accept(&wz("cam0", "cat", "person"), true, T0, payload(2))
        .unwrap();
    q.accept(&w("person"), true, T0, payload(3)).unwrap();
    q.connected();
    let sent = brief(&drain(&mut q));
    let topics = Topics::new("edgeclip", "pi4", "homeassistant");
    let disco = |x: &Watched| (topics.discovery(x), topics.discovery_payload(x));
    let mut want = vec![
        pair("edgeclip/pi4/availability", "online"),
        pair("edgeclip/cam1/availability", "online"),
    ];
    want.extend(many().iter().map(disco));
    want.extend([
        pair(
            "edgeclip/cam1/events",
            &String::from_utf8(replayed(&payload(1))).unwrap(),
        ),
        pair(
            "edgeclip/cam0/events",
            &String::from_utf8(replayed(&payload(2))).unwrap(),
        ),
        pair(
            "edgeclip/cam0/events",
            &String::from_utf8(replayed(&payload(3))).unwrap(),
        ),
        // States in (camera, zone, label) order; the zone `all` keeps its old names.
        pair("edgeclip/cam0/cat/state", "OFF"),
        pair("edgeclip/cam0/person/state", "ON"),
        pair("edgeclip/cam0/cat/person/state", "ON"),
        pair("edgeclip/cam1/person/state", "OFF"),
        pair("edgeclip/cam1/driveway/car/state", "ON"),
    ]);
    assert_eq!(sent, want);
    // The zone `cat` of cam0 and the label `cat` of cam0 are two entities.
    assert_ne!(
        topics.discovery(&w("cat")),
        topics.discovery(&wz("cam0", "cat", "person"))
    );
    // Statistics go to their camera's topic.
    assert!(q.offer_stats("cam1", b"{}".to_vec()));
    assert_eq!(
        brief(&drain(&mut q)),
        vec![pair("edgeclip/cam1/stats", "{}")]
    );
}

#[test]
fn each_camera_s_availability_is_its_own_and_all_go_offline_at_close() {
    let mut q = many_queue(8);
    connected_and_idle(&mut q);
    q.camera_status("cam0", true);
    q.camera_status("cam1", false);
    assert_eq!(
        brief(&drain(&mut q)),
        vec![
            pair("edgeclip/cam0/availability", "online"),
            pair("edgeclip/cam1/availability", "offline"),
        ]
    );
    q.camera_status("cam1", true);
    q.disconnected();
    q.connected();
    let sent = brief(&drain(&mut q));
    assert_eq!(
        sent[..3],
        [
            pair("edgeclip/pi4/availability", "online"),
            pair("edgeclip/cam0/availability", "online"),
            pair("edgeclip/cam1/availability", "online"),
        ],
        "the latest of each camera, again on each connect"
    );
    q.close();
    q.say_offline();
    let sent = brief(&drain(&mut q));
    assert_eq!(
        sent[sent.len() - 3..],
        [
            pair("edgeclip/cam0/availability", "offline"),
            pair("edgeclip/cam1/availability", "offline"),
            pair("edgeclip/pi4/availability", "offline"),
        ]
    );
}

#[test]
fn an_episode_is_one_camera_zone_and_label() {
    // Capacity 3: the same label in two zones and on two cameras are three episodes; dropping
    // the oldest start takes its own end, not the other zone's or camera's.
    let mut q = many_queue(3);
    let zone = wz("cam0", "cat", "person");
    let other = wz("cam1", "all", "person");
    q.accept(&w("person"), true, T0, payload(0)).unwrap();
    q.accept(&zone, true, T0, payload(1)).unwrap();
    q.accept(&other, true, T0, payload(2)).unwrap();
    let a = q.accept(&zone, false, T0, payload(3)).unwrap();
    assert_eq!(
        a.evicted,
        vec![0],
        "the whole frame's start, alone: its end is to come"
    );
    // The whole frame's end follows its dropped start; the zone's end stays.
    assert_eq!(
        q.accept(&w("person"), false, T0, payload(4)),
        Err(Refused::StartDropped {
            dropped: 2,
            evicted: vec![]
        })
    );
    q.connected();
    let sent = drain(&mut q);
    let events: Vec<(String, Vec<u8>)> = sent
        .iter()
        .filter(|s| matches!(s.tag, Tag::Event(_)))
        .map(|s| (s.message.topic.clone(), s.message.payload.clone()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("edgeclip/cam0/events".to_owned(), replayed(&payload(1))),
            ("edgeclip/cam1/events".to_owned(), replayed(&payload(2))),
            ("edgeclip/cam0/events".to_owned(), replayed(&payload(3))),
        ]
    );
    // Every state equals its own last event.
    let states = brief(&sent);
    assert!(states.contains(&pair("edgeclip/cam0/person/state", "OFF")));
    assert!(states.contains(&pair("edgeclip/cam0/cat/person/state", "OFF")));
    assert!(states.contains(&pair("edgeclip/cam1/person/state", "ON")));
}

#[test]
fn a_reload_adds_and_removes_zones_and_cameras() {
    let mut q = many_queue(8);
    connected_and_idle(&mut q);
    let topics = Topics::new("edgeclip", "pi4", "homeassistant");
    let garden = wz("cam2", "garden", "cat");
    // cam1 gone, its zone with it; cam2 with a zone new.
    let now = vec![
        w("person"),
        w("cat"),
        wz("cam0", "cat", "person"),
        garden.clone(),
    ];
    q.set_watched(&now);
    let sent = brief(&drain(&mut q));
    assert_eq!(
        sent,
        vec![
            (topics.discovery(&garden), topics.discovery_payload(&garden)),
            (
                topics.discovery(&wz("cam1", "all", "person")),
                String::new()
            ),
            (
                topics.discovery(&wz("cam1", "driveway", "car")),
                String::new()
            ),
            pair("edgeclip/cam2/garden/cat/state", "OFF"),
        ]
    );
    assert_eq!(
        topics.discovery(&garden),
        "homeassistant/binary_sensor/edgeclip_cam2/garden__cat/config"
    );
}

#[test]
fn snapshots_of_a_zone_go_to_the_zone_s_topic() {
    let mut q = many_queue(8);
    connected_and_idle(&mut q);
    assert!(q.offer_snapshot(&wz("cam1", "driveway", "car"), b"\xFF\xD8z".to_vec()));
    assert!(q.offer_snapshot(&wz("cam1", "all", "person"), b"\xFF\xD8a".to_vec()));
    let topics: Vec<String> = drain(&mut q)
        .iter()
        .map(|s| s.message.topic.clone())
        .collect();
    assert_eq!(
        topics,
        vec![
            "edgeclip/cam1/person/snapshot".to_owned(),
            "edgeclip/cam1/driveway/car/snapshot".to_owned(),
        ]
    );
}

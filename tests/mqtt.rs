//! The MQTT sink against a real broker (rumqttd): topics, payloads, retain flags,
//! availability and its last will, Home Assistant discovery, no loss of accepted events
//! across a broker restart, and snapshots (the sink's retained JPEGs, and the daemon's on the
//! demo clip).
//!
//! Every wait is bounded and fails with what was seen so far; nothing asserts on timing.
//!
//! The restart test runs the broker in a child process (this test binary re-executed with
//! `EDGECLIP_TEST_BROKER_PORT` set, running only `broker_child`), so the broker can be killed
//! and started again on the same port. The child records every message the broker routes to
//! `edgeclip/#` through an in-process subscription made before the broker accepts connections,
//! so no message can slip past the recorder while a network subscriber reconnects.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use edgeclip::config::MqttConfig;
use edgeclip::event::{Event, EventKind, Snapshot, Stats};
use edgeclip::sink::mqtt::{MqttOptions, MqttSink, probe};
use edgeclip::sink::{CameraStatus, EventSink, Watched};
use rumqttc::{Client, Event as MqttEvent, Packet, QoS};

const WAIT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn broker_config(port: u16) -> rumqttd::Config {
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = rumqttd::ServerSettings {
        name: "v4-1".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 256 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 200,
            max_segment_size: 10 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "broker never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A broker on a background thread of this process (it lives until the test process exits).
fn start_broker_in_process() -> u16 {
    let port = free_port();
    let mut broker = rumqttd::Broker::new(broker_config(port));
    std::thread::spawn(move || {
        if let Err(e) = broker.start() {
            eprintln!("broker stopped: {e}");
        }
    });
    wait_for_port(port);
    port
}

fn mqtt_config(port: u16, client_id: &str) -> MqttConfig {
    MqttConfig {
        host: "127.0.0.1".into(),
        port,
        prefix: "edgeclip".into(),
        client_id: Some(client_id.into()),
        username: None,
        password: None,
        tls: false,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        qos: 1,
        keep_alive_s: 5,
        homeassistant_discovery: true,
        discovery_prefix: "homeassistant".into(),
        queue: 1000,
        // The test events happened in 1970 (`ts` is their frame in milliseconds).
        max_event_age_s: 0,
        device: Some("testhost".into()),
    }
}

fn fast() -> MqttOptions {
    MqttOptions {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(2),
        close_timeout: Duration::from_secs(10),
        window: 8,
        snapshots: false,
    }
}

fn event(kind: EventKind, label: &str, frame: u64) -> Event {
    Event {
        kind,
        camera: "cam0".into(),
        zone: "all".into(),
        label: label.into(),
        prompt: format!("a photo of a {label}"),
        score: 0.25,
        prob: 0.75,
        frame,
        ts: SystemTime::UNIX_EPOCH + Duration::from_millis(frame),
        latency_ms: 10.0,
        runner_up: None,
        snapshot: None,
    }
}

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: String,
    /// The payload as it came (snapshots are JPEG bytes).
    bytes: Vec<u8>,
    retain: bool,
}

/// A network subscriber on its own thread; messages arrive on the returned channel.
struct Subscriber {
    rx: mpsc::Receiver<Msg>,
    seen: Vec<Msg>,
    client: Client,
}

impl Subscriber {
    /// Connects, subscribes to `filters` and waits for the SUBACKs. A connection that fails
    /// before the SUBACKs (seen once in CI on a loaded 2-core machine: the in-process broker
    /// dropped the new connection) is tried again, twice at most, with a new client: nothing
    /// was subscribed yet, so no message can be missed.
    fn connect(port: u16, id: &str, filters: &[&str]) -> Subscriber {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Subscriber::try_connect(port, id, filters) {
                Ok(s) => return s,
                Err(e) => {
                    eprintln!("subscriber {id}: {e}; connecting again");
                    failures.push(e);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        panic!("subscriber {id} never subscribed: {failures:?}");
    }

    fn try_connect(port: u16, id: &str, filters: &[&str]) -> Result<Subscriber, String> {
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        // Room for snapshots (rumqttc's default is 10 kB).
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(opts, 16);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).expect("subscribe");
        }
        let (tx, rx) = mpsc::channel();
        let (ack_tx, ack_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for notification in connection.iter() {
                match notification {
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let msg = Msg {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            bytes: p.payload.to_vec(),
                            retain: p.retain,
                        };
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        let _ = ack_tx.send(Ok(()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = ack_tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        for _ in filters {
            match ack_rx.recv_timeout(WAIT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("connection failed before the SUBACK: {e}")),
                Err(e) => return Err(format!("no SUBACK: {e}")),
            }
        }
        Ok(Subscriber {
            rx,
            seen: Vec::new(),
            client,
        })
    }

    /// Collects messages until `done` holds for everything seen so far.
    fn wait_until(&mut self, what: &str, done: impl Fn(&[Msg]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => self.seen.push(m),
                Err(_) => panic!("timed out waiting for {what}; saw {:#?}", self.seen),
            }
        }
    }

    fn on(&self, topic: &str) -> Vec<&Msg> {
        self.seen.iter().filter(|m| m.topic == topic).collect()
    }
}

#[test]
fn topics_payloads_retain_flags_and_discovery() {
    let port = start_broker_in_process();
    let mut live = Subscriber::connect(port, "live", &["edgeclip/#", "homeassistant/#"]);

    let cfg = mqtt_config(port, "edgeclip-test-topics");
    assert!(
        probe(&cfg, "cam0", WAIT)
            .unwrap()
            .contains(&format!("127.0.0.1:{port}"))
    );

    let labels = vec![
        Watched::whole("cam0", "person"),
        Watched::whole("cam0", "cat"),
    ];
    let mut sink = MqttSink::connect(&cfg, &labels, fast()).unwrap();
    assert!(sink.wait_connected(WAIT), "sink never connected");
    sink.camera_status("cam0", &CameraStatus::Online).unwrap();
    sink.publish(&event(EventKind::Start, "person", 7)).unwrap();
    sink.publish_stats(&Stats {
        camera: "cam0".into(),
        ts: SystemTime::UNIX_EPOCH,
        capture_fps: 15.0,
        inference_fps: 9.0,
        p50_ms: 80.0,
        p95_ms: 95.0,
        dropped: 3,
        frames: 100,
        events_dropped: 0,
        store: Default::default(),
    })
    .unwrap();
    sink.publish(&event(EventKind::End, "person", 9)).unwrap();
    // A reload added a label and removed one.
    sink.labels_changed(&[
        Watched::whole("cam0", "person"),
        Watched::whole("cam0", "dog"),
    ])
    .unwrap();
    assert!(sink.wait_idle(WAIT), "events not acknowledged");
    sink.close().expect("clean close");

    live.wait_until("offline after online", |seen| {
        let avail: Vec<&str> = seen
            .iter()
            .filter(|m| m.topic == "edgeclip/testhost/availability")
            .map(|m| m.payload.as_str())
            .collect();
        avail.first() == Some(&"online") && avail.last() == Some(&"offline")
    });
    let camera: Vec<&str> = live
        .on("edgeclip/cam0/availability")
        .iter()
        .map(|m| m.payload.as_str())
        .collect();
    assert_eq!(
        camera,
        vec!["online", "offline"],
        "the camera's own availability"
    );
    live.wait_until("both events", |seen| {
        seen.iter()
            .filter(|m| m.topic == "edgeclip/cam0/events")
            .count()
            >= 2
    });

    // Events: JSON, in order, not retained.
    let events = live.on("edgeclip/cam0/events");
    assert_eq!(events.len(), 2, "{events:#?}");
    let parsed: Vec<Event> = events
        .iter()
        .map(|m| Event::from_json(&m.payload).expect("event JSON"))
        .collect();
    assert_eq!(parsed[0], event(EventKind::Start, "person", 7));
    assert_eq!(parsed[1], event(EventKind::End, "person", 9));
    assert!(events.iter().all(|m| !m.retain));

    // State: OFF at connect, ON at start, OFF at end. The cat never changed.
    let person: Vec<&str> = live
        .on("edgeclip/cam0/person/state")
        .iter()
        .map(|m| m.payload.as_str())
        .collect();
    assert_eq!(person, vec!["OFF", "ON", "OFF"]);
    let cat: Vec<&str> = live
        .on("edgeclip/cam0/cat/state")
        .iter()
        .map(|m| m.payload.as_str())
        .collect();
    assert_eq!(cat, vec!["OFF"]);

    // Statistics.
    let stats = live.on("edgeclip/cam0/stats");
    assert_eq!(stats.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&stats[0].payload).unwrap();
    assert_eq!(v["type"], "stats");
    assert_eq!(v["frames"], 100);

    // Discovery, one config per label.
    for label in labels.iter().map(|w| w.label.as_str()) {
        let topic = format!("homeassistant/binary_sensor/edgeclip_cam0/{label}/config");
        let msgs = live.on(&topic);
        // The cat's is deleted later (a reload removed it).
        assert_eq!(msgs.len(), if label == "cat" { 2 } else { 1 }, "{topic}");
        let v: serde_json::Value = serde_json::from_str(&msgs[0].payload).unwrap();
        assert_eq!(v["state_topic"], format!("edgeclip/cam0/{label}/state"));
        let topics: Vec<&str> = v["availability"]
            .as_array()
            .expect("an availability list")
            .iter()
            .map(|a| a["topic"].as_str().unwrap())
            .collect();
        assert_eq!(
            topics,
            [
                "edgeclip/testhost/availability",
                "edgeclip/cam0/availability"
            ]
        );
        assert_eq!(v["availability_mode"], "all");
        assert_eq!(v["payload_on"], "ON");
        assert_eq!(v["payload_off"], "OFF");
        assert_eq!(v["unique_id"], format!("edgeclip_cam0_{label}"));
        assert_eq!(v["device"]["identifiers"][0], "edgeclip_cam0");
        for key in ["name", "model", "manufacturer"] {
            assert!(v["device"][key].is_string(), "device.{key} in {v}");
        }
    }

    // The label a reload added got its config and its state; the removed one's config was
    // deleted (an empty payload).
    let dog = live.on("homeassistant/binary_sensor/edgeclip_cam0/dog/config");
    assert!(
        dog.len() == 1 && dog[0].payload.contains("edgeclip/cam0/dog/state"),
        "{dog:?}"
    );
    assert_eq!(live.on("edgeclip/cam0/dog/state")[0].payload, "OFF");
    let cat = live.on("homeassistant/binary_sensor/edgeclip_cam0/cat/config");
    assert_eq!(cat.last().map(|m| m.payload.as_str()), Some(""), "{cat:?}");

    // A subscriber arriving later gets exactly the retained messages: availability, states and
    // discovery, not events. A marker published after subscribing arrives after every retained
    // message, which bounds the wait without a sleep.
    let mut late = Subscriber::connect(port, "late", &["edgeclip/#", "homeassistant/#"]);
    late.client
        .publish("edgeclip/marker", QoS::AtLeastOnce, false, "end")
        .unwrap();
    late.wait_until("the marker", |seen| {
        seen.iter().any(|m| m.topic == "edgeclip/marker")
    });
    let retained: BTreeMap<&str, (&str, bool)> = late
        .seen
        .iter()
        .filter(|m| m.topic != "edgeclip/marker")
        .map(|m| (m.topic.as_str(), (m.payload.as_str(), m.retain)))
        .collect();
    assert_eq!(
        retained.get("edgeclip/testhost/availability"),
        Some(&("offline", true))
    );
    assert_eq!(
        retained.get("edgeclip/cam0/person/state"),
        Some(&("OFF", true))
    );
    assert_eq!(
        retained.get("edgeclip/cam0/cat/state"),
        Some(&("OFF", true))
    );
    assert!(matches!(
        retained.get("homeassistant/binary_sensor/edgeclip_cam0/person/config"),
        Some((_, true))
    ));
    assert!(
        !retained.contains_key("homeassistant/binary_sensor/edgeclip_cam0/cat/config"),
        "a removed label's config is deleted"
    );
    assert_eq!(
        retained.get("edgeclip/cam0/availability"),
        Some(&("offline", true))
    );
    assert!(
        !retained.contains_key("edgeclip/cam0/events"),
        "events must not be retained"
    );
    assert!(!retained.contains_key("edgeclip/cam0/stats"));
}

/// `event` of `camera`'s `zone`.
fn event_in(camera: &str, zone: &str, kind: EventKind, label: &str, frame: u64) -> Event {
    Event {
        camera: camera.into(),
        zone: zone.into(),
        ..event(kind, label, frame)
    }
}

fn watched(camera: &str, zone: &str, label: &str) -> Watched {
    Watched {
        camera: camera.into(),
        zone: zone.into(),
        label: label.into(),
    }
}

#[test]
fn two_cameras_and_a_zone_over_one_connection() {
    let port = start_broker_in_process();
    let mut live = Subscriber::connect(port, "live-many", &["edgeclip/#", "homeassistant/#"]);
    let cfg = mqtt_config(port, "edgeclip-test-many");
    // cam0 watches the whole frame and a zone `driveway`; cam1 has a label named `driveway`.
    let all = vec![
        watched("cam0", "all", "person"),
        watched("cam0", "driveway", "person"),
        watched("cam1", "all", "person"),
        watched("cam1", "all", "driveway"),
    ];
    let options = MqttOptions {
        snapshots: true,
        ..fast()
    };
    let mut sink = MqttSink::connect(&cfg, &all, options).unwrap();
    assert!(sink.wait_connected(WAIT), "sink never connected");
    sink.camera_status("cam0", &CameraStatus::Online).unwrap();
    let offline = CameraStatus::Offline {
        reason: "no frame for 10 s".into(),
    };
    sink.camera_status("cam1", &offline).unwrap();
    let sent = [
        event_in("cam0", "driveway", EventKind::Start, "person", 1),
        event_in("cam1", "all", EventKind::Start, "person", 2),
        event_in("cam0", "driveway", EventKind::End, "person", 3),
        event_in("cam1", "all", EventKind::Start, "driveway", 4),
    ];
    for e in &sent {
        sink.publish(e).unwrap();
    }
    sink.publish_snapshot(&Snapshot {
        zone: "driveway".into(),
        ..snapshot("person", 5)
    })
    .unwrap();
    sink.publish_stats(&Stats {
        camera: "cam1".into(),
        ts: SystemTime::UNIX_EPOCH,
        capture_fps: 5.0,
        inference_fps: 5.0,
        p50_ms: 80.0,
        p95_ms: 95.0,
        dropped: 0,
        frames: 42,
        events_dropped: 0,
        store: Default::default(),
    })
    .unwrap();
    assert!(sink.wait_idle(WAIT), "events not acknowledged");
    sink.close().expect("clean close");

    // Each camera's events on its own topic, in order, with their zone.
    live.wait_until("the events of both cameras", |seen| {
        seen.iter().filter(|m| m.topic.ends_with("/events")).count() >= 4
    });
    for camera in ["cam0", "cam1"] {
        let got: Vec<Event> = live
            .on(&format!("edgeclip/{camera}/events"))
            .iter()
            .map(|m| Event::from_json(&m.payload).expect("event JSON"))
            .collect();
        let want: Vec<Event> = sent
            .iter()
            .filter(|e| e.camera == camera)
            .cloned()
            .collect();
        assert_eq!(got, want, "{camera}");
    }
    // Each camera's own availability; both offline after a clean close.
    live.wait_until("both cameras offline", |seen| {
        ["cam0", "cam1"].iter().all(|c| {
            seen.iter()
                .filter(|m| m.topic == format!("edgeclip/{c}/availability"))
                .count()
                >= 2
        })
    });
    let avail = |c: &str| -> Vec<String> {
        live.on(&format!("edgeclip/{c}/availability"))
            .iter()
            .map(|m| m.payload.clone())
            .collect()
    };
    assert_eq!(avail("cam0"), vec!["online", "offline"]);
    assert_eq!(avail("cam1"), vec!["offline", "offline"]);
    let stats = live.on("edgeclip/cam1/stats");
    assert_eq!(stats.len(), 1, "{:#?}", live.seen);
    assert!(live.on("edgeclip/cam0/stats").is_empty());

    // What a subscriber arriving later is told: retained states, snapshots and discovery.
    let mut late = Subscriber::connect(port, "late-many", &["edgeclip/#", "homeassistant/#"]);
    late.client
        .publish("edgeclip/marker", QoS::AtLeastOnce, false, "end")
        .unwrap();
    late.wait_until("the marker", |seen| {
        seen.iter().any(|m| m.topic == "edgeclip/marker")
    });
    let retained: BTreeMap<&str, &Msg> = late
        .seen
        .iter()
        .filter(|m| m.retain)
        .map(|m| (m.topic.as_str(), m))
        .collect();
    let payload = |topic: &str| -> &str {
        retained
            .get(topic)
            .unwrap_or_else(|| panic!("{topic} not retained: {:#?}", late.seen))
            .payload
            .as_str()
    };
    // The zone `all` keeps today's names; the zone gets its own level.
    assert_eq!(payload("edgeclip/cam0/person/state"), "OFF");
    assert_eq!(payload("edgeclip/cam0/driveway/person/state"), "OFF");
    assert_eq!(payload("edgeclip/cam1/person/state"), "ON");
    assert_eq!(payload("edgeclip/cam1/driveway/state"), "ON");
    assert_eq!(
        retained["edgeclip/cam0/driveway/person/snapshot"].bytes,
        snapshot("person", 5).jpeg
    );
    assert_eq!(payload("edgeclip/cam0/availability"), "offline");
    assert_eq!(payload("edgeclip/cam1/availability"), "offline");

    // Discovery: one entity per camera, zone and label, no two alike; one device per camera.
    let config = |topic: &str| -> serde_json::Value {
        serde_json::from_str(payload(topic)).unwrap_or_else(|e| panic!("{topic}: {e}"))
    };
    let sensors = [
        (
            "edgeclip_cam0/person",
            "person",
            "edgeclip/cam0/person/state",
        ),
        (
            "edgeclip_cam0/driveway__person",
            "person (driveway)",
            "edgeclip/cam0/driveway/person/state",
        ),
        (
            "edgeclip_cam1/person",
            "person",
            "edgeclip/cam1/person/state",
        ),
        (
            "edgeclip_cam1/driveway",
            "driveway",
            "edgeclip/cam1/driveway/state",
        ),
    ];
    let mut ids = Vec::new();
    for (path, name, state) in sensors {
        let v = config(&format!("homeassistant/binary_sensor/{path}/config"));
        assert_eq!(v["name"], name, "{path}");
        assert_eq!(v["state_topic"], state, "{path}");
        let camera = &path["edgeclip_".len()..path.find('/').unwrap()];
        assert_eq!(v["device"]["identifiers"][0], format!("edgeclip_{camera}"));
        let availability: Vec<&str> = v["availability"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["topic"].as_str().unwrap())
            .collect();
        assert_eq!(
            availability,
            [
                "edgeclip/testhost/availability".to_owned(),
                format!("edgeclip/{camera}/availability")
            ]
        );
        ids.push(v["unique_id"].as_str().unwrap().to_owned());
        let image = config(&format!("homeassistant/image/{path}/config"));
        assert_eq!(image["name"], format!("{name} snapshot"));
        ids.push(image["unique_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[2], "edgeclip_cam0_driveway__person");
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "unique ids collide: {ids:?}");
}

#[test]
fn last_will_marks_the_camera_offline_when_the_connection_dies() {
    let port = start_broker_in_process();
    let mut live = Subscriber::connect(port, "will-watcher", &["edgeclip/testhost/availability"]);
    let cfg = mqtt_config(port, "edgeclip-test-will");
    let sink = MqttSink::connect(&cfg, &[Watched::whole("cam0", "person")], fast()).unwrap();
    assert!(sink.wait_connected(WAIT));
    live.wait_until("online", |seen| seen.iter().any(|m| m.payload == "online"));
    // Dropping without close() tears the TCP connection down without a DISCONNECT: the broker
    // must publish the will.
    drop(sink);
    live.wait_until("the will", |seen| {
        seen.last().is_some_and(|m| m.payload == "offline")
    });
}

#[test]
fn events_arrive_in_order_at_every_qos() {
    let port = start_broker_in_process();
    for qos in 0..=2u8 {
        let mut live = Subscriber::connect(port, &format!("qos-watcher-{qos}"), &["edgeclip/#"]);
        let mut cfg = mqtt_config(port, &format!("edgeclip-test-qos-{qos}"));
        cfg.qos = qos;
        let mut sink =
            MqttSink::connect(&cfg, &[Watched::whole("cam0", "person")], fast()).unwrap();
        assert!(sink.wait_connected(WAIT), "qos {qos}: sink never connected");
        // More events than the window, so the queue hands them over in several rounds.
        for f in 0..40 {
            sink.publish(&event(kind_of(f), "person", f)).unwrap();
        }
        assert!(sink.wait_idle(WAIT), "qos {qos}: events not acknowledged");
        assert_eq!(sink.delivered(), 40, "qos {qos}");
        assert_eq!(sink.queued(), 0, "qos {qos}");
        sink.close().expect("clean close");
        // The offline of this close: after the last event (an earlier round's offline may
        // arrive first, retained or not).
        live.wait_until("every event and offline", |seen| {
            let events: Vec<usize> = (0..seen.len())
                .filter(|&i| seen[i].topic == "edgeclip/cam0/events")
                .collect();
            events.len() >= 40
                && seen[events[events.len() - 1]..]
                    .iter()
                    .any(|m| m.topic == "edgeclip/testhost/availability" && m.payload == "offline")
        });
        let frames: Vec<u64> = live
            .on("edgeclip/cam0/events")
            .iter()
            .map(|m| Event::from_json(&m.payload).expect("event JSON").frame)
            .collect();
        assert_eq!(frames, (0..40).collect::<Vec<_>>(), "qos {qos}");
        // The last state is the last event's (frame 39 = end), after every event.
        let last_event = live
            .seen
            .iter()
            .rposition(|m| m.topic == "edgeclip/cam0/events")
            .unwrap();
        let last_state = live
            .seen
            .iter()
            .rposition(|m| m.topic == "edgeclip/cam0/person/state")
            .unwrap();
        assert!(last_state > last_event, "qos {qos}: {:#?}", live.seen);
        assert_eq!(live.seen[last_state].payload, "OFF", "qos {qos}");
    }
}

#[test]
fn a_table_built_in_code_is_checked_before_connecting() {
    let mut cfg = mqtt_config(free_port(), "edgeclip-test-invalid");
    cfg.keep_alive_s = 1;
    let err = MqttSink::connect(&cfg, &[Watched::whole("cam0", "person")], fast())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("mqtt.keep_alive_s"), "{err}");
    let err = probe(&cfg, "cam0", Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("mqtt.keep_alive_s"), "{err}");
}

#[test]
fn probe_names_a_broker_that_is_not_there() {
    let port = free_port();
    let err = probe(
        &mqtt_config(port, "edgeclip-probe"),
        "cam0",
        Duration::from_secs(3),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Broker restart.

const CHILD_ENV: &str = "EDGECLIP_TEST_BROKER_PORT";

/// Not a test: the entry point of the broker child process used by
/// `accepted_events_survive_a_broker_restart` (it returns at once when run without
/// `EDGECLIP_TEST_BROKER_PORT`). It prints `READY` once the broker listens and `MSG <topic>
/// <payload>` for every message routed to `edgeclip/#`.
#[test]
#[ignore = "entry point of the broker child process, run by accepted_events_survive_a_broker_restart"]
fn broker_child() {
    let Some(port) = std::env::var(CHILD_ENV)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        return;
    };
    let mut broker = rumqttd::Broker::new(broker_config(port));
    let (mut link_tx, mut link_rx) = broker.link("recorder").expect("local link");
    link_tx.subscribe("edgeclip/#").expect("local subscription");
    std::thread::spawn(move || {
        if let Err(e) = broker.start() {
            eprintln!("broker stopped: {e}");
        }
    });
    std::thread::spawn(move || {
        wait_for_port(port);
        println!("READY");
    });
    loop {
        match link_rx.recv() {
            Ok(Some(rumqttd::Notification::Forward(f))) => {
                println!(
                    "MSG {} {}",
                    String::from_utf8_lossy(&f.publish.topic),
                    String::from_utf8_lossy(&f.publish.payload)
                );
            }
            // The router pauses a link whose buffer filled up until it says it is ready again.
            Ok(Some(rumqttd::Notification::Unschedule)) => {
                if let Err(e) = link_rx.ready() {
                    eprintln!("recorder link closed: {e}");
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("recorder link closed: {e}");
                return;
            }
        }
    }
}

/// A broker child process; killed when dropped.
struct ChildBroker {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// (topic, payload) of every message the broker routed.
    seen: Vec<(String, String)>,
}

impl ChildBroker {
    fn start(port: u16) -> ChildBroker {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([
                "broker_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut b = ChildBroker {
            child,
            lines,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match b.lines.recv_timeout(left) {
                // libtest may have printed `test broker_child ... ` on the same line.
                Ok(l) if l.trim_end().ends_with("READY") => return b,
                // A client retrying in the background (the restart test's sink) can connect and
                // publish before the READY line is printed: keep what the broker routed.
                Ok(l) => b.record(&l),
                Err(_) => panic!("the broker child did not become ready on port {port}"),
            }
        }
    }

    /// Keeps a `MSG TOPIC PAYLOAD` line of the child.
    fn record(&mut self, line: &str) {
        if let Some(rest) = line.find("MSG ").map(|at| &line[at + 4..])
            && let Some((topic, payload)) = rest.split_once(' ')
        {
            self.seen.push((topic.to_owned(), payload.to_owned()));
        }
    }

    fn wait_until(&mut self, what: &str, done: impl Fn(&[(String, String)]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.record(&l),
                Err(_) => panic!(
                    "timed out waiting for {what}; the broker saw {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Frame numbers of the events the broker routed, in order.
    fn event_frames(seen: &[(String, String)]) -> Vec<u64> {
        seen.iter()
            .filter(|(t, _)| t == "edgeclip/cam0/events")
            .map(|(_, p)| Event::from_json(p).expect("event JSON").frame)
            .collect()
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kind_of(frame: u64) -> EventKind {
    if frame.is_multiple_of(2) {
        EventKind::Start
    } else {
        EventKind::End
    }
}

#[test]
fn accepted_events_survive_a_broker_restart() {
    let port = free_port();
    let mut first = ChildBroker::start(port);
    let cfg = mqtt_config(port, "edgeclip-test-restart");
    let mut sink = MqttSink::connect(&cfg, &[Watched::whole("cam0", "person")], fast()).unwrap();
    assert!(sink.wait_connected(WAIT), "sink never connected");

    // Phase 1: events while the broker is up.
    for f in 0..10 {
        sink.publish(&event(kind_of(f), "person", f)).unwrap();
    }
    assert!(sink.wait_idle(WAIT), "phase 1 events not acknowledged");
    first.wait_until("phase 1 events", |seen| {
        ChildBroker::event_frames(seen).len() >= 10
    });
    assert_eq!(
        ChildBroker::event_frames(&first.seen),
        (0..10).collect::<Vec<_>>()
    );
    assert!(
        !first.seen.iter().any(|(_, p)| p.contains("replayed")),
        "live events are not marked"
    );
    first.kill();

    // Phase 2: events while the broker is down are accepted and queued.
    let deadline = Instant::now() + WAIT;
    while sink.is_connected() {
        assert!(
            Instant::now() < deadline,
            "the sink did not notice the broker died"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for f in 10..30 {
        sink.publish(&event(kind_of(f), "person", f))
            .expect("accepted while the broker is away");
    }
    assert!(sink.queued() > 0);

    // Phase 3: the broker comes back on the same port; every accepted event arrives, in order.
    let mut second = ChildBroker::start(port);
    second.wait_until("the queued events", |seen| {
        ChildBroker::event_frames(seen).len() >= 20
    });
    assert_eq!(
        ChildBroker::event_frames(&second.seen),
        (10..30).collect::<Vec<_>>(),
        "queued events delivered exactly once each, in order"
    );
    assert!(sink.wait_idle(WAIT));
    assert_eq!(sink.dropped(), 0);
    // The events that waited for the broker say so, and keep their time; the live ones do not.
    let events = |seen: &[(String, String)]| -> Vec<serde_json::Value> {
        seen.iter()
            .filter(|(t, _)| t == "edgeclip/cam0/events")
            .map(|(_, p)| serde_json::from_str(p).unwrap())
            .collect()
    };
    for e in events(&second.seen) {
        assert_eq!(e["replayed"], true, "{e}");
        let frame = e["frame"].as_u64().unwrap();
        let ts = edgeclip::event::format_timestamp(event(kind_of(frame), "person", frame).ts);
        assert_eq!(e["ts"], ts.as_str(), "the original ts");
    }

    // Retained state and availability are republished to the new broker; the last state comes
    // after the replayed events and matches the last event (frame 29 = end).
    second.wait_until("online and the state", |seen| {
        seen.iter()
            .any(|(t, p)| t == "edgeclip/testhost/availability" && p == "online")
            && seen.iter().any(|(t, _)| t == "edgeclip/cam0/person/state")
    });
    let last_event = second
        .seen
        .iter()
        .rposition(|(t, _)| t == "edgeclip/cam0/events")
        .unwrap();
    let last_state = second
        .seen
        .iter()
        .rposition(|(t, _)| t == "edgeclip/cam0/person/state")
        .unwrap();
    assert!(last_state > last_event, "{:#?}", second.seen);
    assert_eq!(second.seen[last_state].1, "OFF");

    sink.close().expect("clean close");
    second.wait_until("offline", |seen| {
        seen.iter()
            .any(|(t, p)| t == "edgeclip/testhost/availability" && p == "offline")
    });
}

// ---------------------------------------------------------------------------------------------
// Snapshots.

fn snapshot(label: &str, tag: u8) -> Snapshot {
    Snapshot {
        camera: "cam0".into(),
        zone: "all".into(),
        label: label.into(),
        path: format!("/s/cam0/{label}/{tag}.jpg").into(),
        jpeg: vec![0xFF, 0xD8, tag, 0xFF, 0xD9],
    }
}

#[test]
fn the_latest_snapshot_of_each_label_is_retained() {
    let port = start_broker_in_process();
    let mut cfg = mqtt_config(port, "edgeclip-test-snapshots");
    cfg.homeassistant_discovery = true;
    let labels = vec![
        Watched::whole("cam0", "person"),
        Watched::whole("cam0", "cat"),
    ];
    let options = MqttOptions {
        snapshots: true,
        ..fast()
    };
    let mut sink = MqttSink::connect(&cfg, &labels, options).unwrap();
    // Offered before the broker connection is up: kept for the connect, only the latest.
    sink.publish_snapshot(&snapshot("person", 1)).unwrap();
    sink.publish_snapshot(&snapshot("person", 2)).unwrap();
    assert!(sink.wait_connected(WAIT));
    sink.publish(&event(EventKind::Start, "cat", 3)).unwrap();
    sink.publish_snapshot(&snapshot("cat", 3)).unwrap();
    assert!(sink.wait_idle(WAIT), "snapshots not acknowledged");
    sink.close().expect("clean close");

    let mut late = Subscriber::connect(port, "late-snap", &["edgeclip/#", "homeassistant/#"]);
    late.client
        .publish("edgeclip/marker", QoS::AtLeastOnce, false, "end")
        .unwrap();
    late.wait_until("the marker", |seen| {
        seen.iter().any(|m| m.topic == "edgeclip/marker")
    });
    let retained = |topic: &str| -> Vec<u8> {
        let msgs = late.on(topic);
        assert_eq!(msgs.len(), 1, "{topic}: {:#?}", late.seen);
        assert!(msgs[0].retain, "{topic} retained");
        msgs[0].bytes.clone()
    };
    assert_eq!(
        retained("edgeclip/cam0/person/snapshot"),
        snapshot("person", 2).jpeg
    );
    assert_eq!(
        retained("edgeclip/cam0/cat/snapshot"),
        snapshot("cat", 3).jpeg
    );
    let image: serde_json::Value =
        serde_json::from_slice(&retained("homeassistant/image/edgeclip_cam0/person/config"))
            .unwrap();
    assert_eq!(image["image_topic"], "edgeclip/cam0/person/snapshot");
    assert_eq!(image["content_type"], "image/jpeg");
}

#[test]
fn the_daemon_publishes_each_start_events_snapshot() {
    let port = start_broker_in_process();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    let path = common::root().join("firmware-config/demo.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("fps = 15", "fps = 60")
        .replace("stdout = true", "stdout = false");
    let text = format!(
        "{text}\n[snapshots]\ndir = \"{}\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\
         client_id = \"edgeclip-test-daemon-snapshots\"\nhomeassistant_discovery = true\n",
        dir.display()
    );
    let config = edgeclip::config::Config::from_toml_str(&text, Some(&path)).unwrap();
    let daemon = edgeclip::daemon::Daemon::new(config).unwrap();
    let source = edgeclip::source::open_source(daemon.config().camera()).unwrap();
    let sinks = edgeclip::sink::open_sinks(daemon.config()).unwrap();
    let summary = daemon
        .run(
            vec![source],
            sinks,
            &edgeclip::daemon::Control::default(),
            edgeclip::daemon::Delivery::Lossless,
        )
        .unwrap();
    assert_eq!(summary.snapshots.written, 4, "{summary:?}");

    let mut late = Subscriber::connect(port, "late-daemon", &["edgeclip/#", "homeassistant/#"]);
    late.client
        .publish("edgeclip/marker", QoS::AtLeastOnce, false, "end")
        .unwrap();
    late.wait_until("the marker", |seen| {
        seen.iter().any(|m| m.topic == "edgeclip/marker")
    });
    let snapshots: Vec<&Msg> = late
        .seen
        .iter()
        .filter(|m| m.topic.ends_with("/snapshot"))
        .collect();
    assert_eq!(snapshots.len(), 4, "{:#?}", late.seen);
    for m in snapshots {
        let label = m.topic.split('/').nth(2).unwrap();
        assert_eq!(m.topic, format!("edgeclip/demo/{label}/snapshot"));
        assert!(m.retain);
        assert_eq!(&m.bytes[..2], [0xFF, 0xD8], "{} is a JPEG", m.topic);
        // The bytes of the file the event named.
        let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("demo").join(label))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(std::fs::read(&files[0]).unwrap(), m.bytes);
        assert!(
            late.seen
                .iter()
                .any(|d| d.topic == format!("homeassistant/image/edgeclip_demo/{label}/config")),
            "{label}: no image entity"
        );
    }
}

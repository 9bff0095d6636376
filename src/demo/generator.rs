//! Realistic fleet events in the shapes of the built-in samples: Mender,
//! OpenMDM, Magistrala and CMDB events about a fleet of devices, with fresh
//! ids and times, plus the odd malformed record.

use serde_json::{Value, json};

use crate::samples::SAMPLES;
use crate::source::extract::Preset;

/// An input topic of the demo with the preset that reads it.
#[derive(Debug, Clone, Copy)]
pub struct DemoTopic {
    /// Topic name.
    pub name: &'static str,
    /// Extraction preset.
    pub preset: Preset,
}

/// The demo's input topics.
pub const TOPICS: [DemoTopic; 4] = [
    DemoTopic {
        name: "device-events",
        preset: Preset::Mender,
    },
    DemoTopic {
        name: "mdm-events",
        preset: Preset::Openmdm,
    },
    DemoTopic {
        name: "telemetry",
        preset: Preset::Magistrala,
    },
    DemoTopic {
        name: "cmdb-events",
        preset: Preset::Cmdb,
    },
];

/// One generated record.
#[derive(Debug, Clone)]
pub struct GeneratedEvent {
    /// Index into [`TOPICS`].
    pub topic: usize,
    /// Record key (the device).
    pub key: String,
    /// Record value.
    pub body: Vec<u8>,
    /// The type the preset will extract (`None` for malformed records).
    pub event_type: Option<String>,
}

/// Makes events for a fleet of `devices` devices.
#[derive(Debug)]
pub struct FleetGenerator {
    devices: Vec<String>,
    samples: Vec<(String, Value)>,
    counter: u64,
    /// Every n-th record is malformed (0 = never).
    pub malformed_every: u64,
}

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl FleetGenerator {
    /// A generator for `devices` devices.
    pub fn new(devices: usize) -> Self {
        let samples = SAMPLES
            .iter()
            .filter_map(|(name, text)| Some((name.to_string(), serde_json::from_str(text).ok()?)))
            .collect();
        Self {
            devices: (0..devices.max(1)).map(|_| random_uuid()).collect(),
            samples,
            counter: 0,
            malformed_every: 0,
        }
    }

    fn sample(&self, prefix: &str, pick: usize) -> Value {
        let matching: Vec<&Value> = self
            .samples
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, v)| v)
            .collect();
        matching
            .get(pick % matching.len().max(1))
            .map(|v| (*v).clone())
            .unwrap_or(Value::Null)
    }

    /// The next event.
    pub fn next_event(&mut self) -> GeneratedEvent {
        self.counter += 1;
        let n = self.counter as usize;
        let device = self.devices[rand::random_range(0..self.devices.len())].clone();
        if self.malformed_every > 0 && self.counter.is_multiple_of(self.malformed_every) {
            return GeneratedEvent {
                topic: 0,
                key: device,
                body: b"{\"type\": \"device-provisioned\", truncated".to_vec(),
                event_type: None,
            };
        }
        let topic = match n % 10 {
            0..=5 => 0,
            6 | 7 => 1,
            8 => 2,
            _ => 3,
        };
        let (value, event_type) = match topic {
            0 => {
                let mut v = self.sample("mender", rand::random_range(0..4));
                v["id"] = json!(random_uuid());
                v["time"] = json!(now_rfc3339());
                if v["data"].get("device_id").is_some() {
                    v["data"]["device_id"] = json!(device);
                } else {
                    v["data"]["id"] = json!(device);
                }
                let t = v["type"].as_str().unwrap_or_default().to_string();
                (v, t)
            }
            1 => {
                let mut v = self.sample("openmdm", rand::random_range(0..2));
                v["id"] = json!(random_uuid());
                v["timestamp"] = json!(now_rfc3339());
                v["data"]["device"]["id"] = json!(device);
                let t = v["event"].as_str().unwrap_or_default().to_string();
                (v, t)
            }
            2 => {
                let mut v = self.sample("magistrala", 0);
                let sub = ["temperature", "humidity", "battery"][rand::random_range(0..3)];
                v["subtopic"] = json!(sub);
                v["publisher"] = json!(device);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                v["created"] = json!(nanos);
                v["payload"][0]["v"] = json!(15.0 + rand::random::<f64>() * 15.0);
                (v, sub.to_string())
            }
            _ => {
                let mut v = self.sample("cmdb", 0);
                let ev = ["create", "update", "delete"][rand::random_range(0..3)];
                v["event"] = json!(ev);
                v["object"]["public_id"] = json!(rand::random_range(1000..9999));
                v["timestamp"] = json!(now_rfc3339());
                (v, ev.to_string())
            }
        };
        GeneratedEvent {
            topic,
            key: device,
            body: serde_json::to_vec(&value).unwrap_or_default(),
            event_type: Some(event_type),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::extract::{Coordinates, Extractor};

    #[test]
    fn generated_events_extract_to_the_announced_type() {
        let mut g = FleetGenerator::new(5);
        g.malformed_every = 7;
        let mut extractors: Vec<Extractor> =
            TOPICS.iter().map(|t| Extractor::preset(t.preset)).collect();
        let mut malformed = 0;
        for i in 0..200 {
            let e = g.next_event();
            let coords = Coordinates {
                topic: TOPICS[e.topic].name,
                partition: 0,
                offset: i,
            };
            let got = extractors[e.topic].extract(&e.body, &|_| None, &coords, 1 << 20);
            match e.event_type {
                Some(t) => assert_eq!(got.unwrap().event_type(), t),
                None => {
                    malformed += 1;
                    assert!(got.is_err());
                }
            }
        }
        assert_eq!(malformed, 28);
    }
}

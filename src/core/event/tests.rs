//! Unit tests of the event shapes.

use super::*;

impl Payload {
    /// An input event of topic `in`, partition `partition` (topic index 0),
    /// at `offset`: key `device-1`, id `e<offset>`, type `device.updated`
    /// (unit tests of the stages).
    pub(crate) fn test_input(partition: i32, offset: i64, body: &str) -> Self {
        Payload::Input(Arc::new(InputEvent {
            record: SourceRecord {
                topic: Arc::from("in"),
                partition: PartitionId {
                    topic: 0,
                    partition,
                },
                offset,
                key: Some(Bytes::from_static(b"device-1")),
                body: Bytes::from(body.to_string()),
                headers: RecordHeaders::default(),
                consumed_at: std::time::Instant::now(),
            },
            fields: Fields {
                id: format!("e{offset}"),
                event_type: "device.updated".into(),
                ..Fields::default()
            },
        }))
    }
}

#[test]
fn coordinates_are_topic_partition_offset() {
    assert_eq!(
        coordinates("mender.deployments", 11, 9_876_543_210),
        "mender.deployments/11/9876543210"
    );
    assert_eq!(
        coordinates_id("t", 0, 1),
        coordinates_id("t", 0, 1),
        "stable"
    );
    assert_ne!(coordinates_id("t", 0, 1), coordinates_id("t", 0, 2));
    assert_eq!(coordinates_id("t", 0, 1).len(), 32);
}

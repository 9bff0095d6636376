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
            fields: Fields::new(
                FieldTexts {
                    id: &format!("e{offset}"),
                    event_type: "device.updated",
                    ..FieldTexts::default()
                },
                None,
                None,
            ),
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

#[test]
fn the_source_is_the_kept_header_or_the_records_own_coordinates() {
    let own = Payload::test_input(3, 42, "{}");
    assert_eq!(
        own.source_ref(),
        SourceRef::At {
            topic: "in",
            partition: 3,
            offset: 42
        }
    );
    assert_eq!(&*own.source(), b"in/3/42");
    assert_eq!(own.source_text(), "in/3/42");

    let Payload::Input(event) = own else {
        unreachable!()
    };
    let mut event = Arc::try_unwrap(event).expect("the only reference");
    event.record.headers = RecordHeaders::from_pairs([(header::SOURCE, &b"first\xff/0/7"[..])]);
    let kept = Payload::Input(Arc::new(event));
    assert_eq!(kept.source_ref(), SourceRef::Kept(b"first\xff/0/7"));
    assert_eq!(&*kept.source(), b"first\xff/0/7");
    assert_eq!(kept.source_text(), "first\u{fffd}/0/7");
}

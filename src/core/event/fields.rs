//! What extraction found in an input event ([`Fields`]): its texts kept
//! in one allocation, read through accessors.
//!
//! A leaf of `core::event`: plain data, no I/O.

/// The texts of an event's fields, borrowed, to build [`Fields`] from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldTexts<'a> {
    /// Event id (from the event, or a hash of its coordinates).
    pub id: &'a str,
    /// Event type the index matches on.
    pub event_type: &'a str,
    /// Device id.
    pub device: Option<&'a str>,
    /// Device group.
    pub group: Option<&'a str>,
    /// Tenant.
    pub tenant: Option<&'a str>,
}

/// The place of each text in a [`Fields`]' string, in order.
const ID: usize = 0;
const TYPE: usize = 1;
const DEVICE: usize = 2;
const GROUP: usize = 3;
const TENANT: usize = 4;

/// What extraction found in an input event.
///
/// The id, type, device, group and tenant are one string, one allocation
/// per event instead of one per field: each record's fields are made on
/// the consumer thread and freed on a delivery worker, and those frees
/// and the allocator's work after them were a few per cent of bench (b).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// The texts one after another.
    text: Box<str>,
    /// Where each text ends in `text` (it starts where the one before
    /// ends).
    ends: [usize; 5],
    /// Which of device, group and tenant there are (bits `DEVICE`,
    /// `GROUP`, `TENANT`): an absent one and an empty one differ.
    present: u8,
    /// Event time, unix milliseconds, when the event carries one.
    pub time_ms: Option<i64>,
    /// Where the source's platform finds the body it sends inside the
    /// event (Magistrala `/payload`, CMDB `/object`; `None`: the whole
    /// event): the default of endpoints without a `payload`.
    pub body_pointer: Option<&'static str>,
}

impl Fields {
    /// Fields with `texts` (copied), the event's time and its platform's
    /// body pointer.
    pub fn new(
        texts: FieldTexts<'_>,
        time_ms: Option<i64>,
        body_pointer: Option<&'static str>,
    ) -> Self {
        let parts = [
            Some(texts.id),
            Some(texts.event_type),
            texts.device,
            texts.group,
            texts.tenant,
        ];
        let len = parts.iter().flatten().map(|p| p.len()).sum();
        let mut text = String::with_capacity(len);
        let mut ends = [0; 5];
        let mut present = 0;
        for (i, part) in parts.iter().enumerate() {
            if let Some(part) = part {
                text.push_str(part);
                present |= 1 << i;
            }
            ends[i] = text.len();
        }
        Self {
            text: text.into_boxed_str(),
            ends,
            present,
            time_ms,
            body_pointer,
        }
    }

    /// Text `i`, present or not.
    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(start..self.ends[i]).unwrap_or_default()
    }

    /// Text `i` when there is one.
    fn optional(&self, i: usize) -> Option<&str> {
        (self.present & (1 << i) != 0).then(|| self.part(i))
    }

    /// Event id (from the event, or a hash of its coordinates).
    pub fn id(&self) -> &str {
        self.part(ID)
    }

    /// Event type the index matches on.
    pub fn event_type(&self) -> &str {
        self.part(TYPE)
    }

    /// Device id.
    pub fn device(&self) -> Option<&str> {
        self.optional(DEVICE)
    }

    /// Device group.
    pub fn group(&self) -> Option<&str> {
        self.optional(GROUP)
    }

    /// Tenant.
    pub fn tenant(&self) -> Option<&str> {
        self.optional(TENANT)
    }

    /// The texts, borrowed.
    #[cfg(test)]
    fn texts(&self) -> FieldTexts<'_> {
        FieldTexts {
            id: self.id(),
            event_type: self.event_type(),
            device: self.device(),
            group: self.group(),
            tenant: self.tenant(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_text_reads_back_as_given_absent_and_empty_apart() {
        let cases = [
            FieldTexts::default(),
            FieldTexts {
                id: "5a0c6a0e-7d2b-4a53-9a6e-1d2f8c9b0a11",
                event_type: "device-provisioned",
                device: Some("769e5a83-259c-4506-ab05-9c2564f196fd"),
                group: None,
                tenant: Some("66ff8a4650829de3d99a25f1"),
            },
            FieldTexts {
                id: "",
                event_type: "é",
                device: Some(""),
                group: Some("g\"1"),
                tenant: None,
            },
            FieldTexts {
                id: "x",
                event_type: "t",
                device: None,
                group: None,
                tenant: Some(""),
            },
        ];
        for texts in cases {
            let fields = Fields::new(texts, Some(-5), Some("/payload"));
            assert_eq!(fields.texts(), texts);
            assert_eq!(fields.time_ms, Some(-5));
            assert_eq!(fields.body_pointer, Some("/payload"));
        }
    }
}

//! The sample fleet events of `shared/sample-events`, built into the binary so
//! that `hookstream demo` works from a plain clone.

/// `(file name, JSON text)` of every built-in sample event.
pub const SAMPLES: [(&str, &str); 8] = [
    (
        "cmdb-object-updated.json",
        include_str!("cmdb-object-updated.json"),
    ),
    (
        "magistrala-message.json",
        include_str!("magistrala-message.json"),
    ),
    (
        "mender-device-decommissioned.json",
        include_str!("mender-device-decommissioned.json"),
    ),
    (
        "mender-device-provisioned.json",
        include_str!("mender-device-provisioned.json"),
    ),
    (
        "mender-device-status-changed.json",
        include_str!("mender-device-status-changed.json"),
    ),
    (
        "mender-devices-inventory-changed.json",
        include_str!("mender-devices-inventory-changed.json"),
    ),
    (
        "openmdm-device-enrolled.json",
        include_str!("openmdm-device-enrolled.json"),
    ),
    (
        "openmdm-security-tamper.json",
        include_str!("openmdm-security-tamper.json"),
    ),
];

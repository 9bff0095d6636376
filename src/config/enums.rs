//! The named choices of the configuration: signature schemes and source
//! presets. Plain data; the stages give them meaning (`sign` signs by
//! scheme, `source::extract` reads fields by preset).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How requests to an endpoint are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureScheme {
    /// Standard Webhooks v1: `webhook-signature: v1,<base64>` over `id.timestamp.body`.
    #[default]
    Standard,
    /// Mender iot-manager: `X-Men-Signature: <hex>` over the body, hex key.
    Mender,
    /// OpenMDM: `X-OpenMDM-Signature: sha256=<hex>` over the body.
    Openmdm,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github,
    /// No signature header.
    None,
}

impl SignatureScheme {
    /// Every scheme, for CLIs and tests.
    pub const ALL: [SignatureScheme; 5] = [
        Self::Standard,
        Self::Mender,
        Self::Openmdm,
        Self::Github,
        Self::None,
    ];

    /// The lowercase name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Mender => "mender",
            Self::Openmdm => "openmdm",
            Self::Github => "github",
            Self::None => "none",
        }
    }

    /// Parses a configuration name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Field layouts of the platforms hookstream serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Mender iot-manager / workflows events.
    #[default]
    Mender,
    /// OpenMDM outbound events.
    Openmdm,
    /// Magistrala (Mainflux) SenML messages.
    Magistrala,
    /// CMDB object change events.
    Cmdb,
    /// CloudEvents, binary (`ce_*` headers) or structured mode.
    Cloudevents,
    /// Only the configured pointers.
    Custom,
}

/// A Mender webhook integration's scope: the documented set of event types
/// it fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Device lifecycle: provisioned, decommissioned, status changed.
    Deviceauth,
    /// Inventory changes.
    Inventory,
}

impl Scope {
    /// The event types of the scope.
    pub fn event_types(self) -> &'static [&'static str] {
        match self {
            Self::Deviceauth => &[
                "device-provisioned",
                "device-decommissioned",
                "device-status-changed",
            ],
            Self::Inventory => &["devices-inventory-changed"],
        }
    }

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Deviceauth => "deviceauth",
            Self::Inventory => "inventory",
        }
    }
}

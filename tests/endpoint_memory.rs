//! What an idle endpoint costs in memory (issue 17): 100 000 endpoints,
//! each watching one device, as the pipeline holds them (validated
//! [`Endpoint`]s behind `Arc`s in the registry's index), measured as the
//! growth of this process's resident memory.
//!
//! Ignored by default: resident memory is the whole process's, so it needs
//! a test binary of its own and nothing else running in it. Run it with
//! `cargo test --release --test endpoint_memory -- --ignored --nocapture`.
//! `hookstream bench --scenario i` measures the whole service
//! (`hookstream run` in a process of its own) with 100 000 endpoints and
//! traffic to 1 000 of them.

use std::sync::Arc;
use std::time::Duration;

use hookstream::config::{EndpointConfig, SignatureScheme};
use hookstream::index::Endpoint;
use hookstream::index::registry::EndpointRegistry;

const ENDPOINTS: usize = 100_000;

/// Resident memory of this process in bytes, after the allocators gave
/// back what they could.
fn resident_bytes() -> f64 {
    // SAFETY: both only walk their allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
        libmimalloc_sys::mi_collect(true);
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024.0
}

fn config(i: usize) -> EndpointConfig {
    let mut c = EndpointConfig::new(
        format!("device-endpoint-{i}"),
        format!("https://hooks{}.example.com/fleet/in", i % 997),
    );
    c.signature = SignatureScheme::Standard;
    c.secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    c.events = vec!["device-*".into()];
    c.devices = vec![format!("dev-{i}")];
    c
}

#[test]
#[ignore = "measures resident memory: run alone, in release"]
fn an_idle_endpoint_costs_at_most_one_kib() {
    // Everything an endpoint keeps counts, its configuration included.
    let before = resident_bytes();
    // Each configuration is built as it arrives, as the endpoint store
    // does with the records of its topic (a vector of all configurations
    // first would leave its buffer, ~370 bytes an endpoint, in the count).
    let endpoints: Vec<Arc<Endpoint>> = (0..ENDPOINTS)
        .map(config)
        .map(|c| {
            Endpoint::build(c, true, Duration::from_secs(10), &|_| None)
                .map(Arc::new)
                .expect("a valid endpoint")
        })
        .collect();
    let registry = EndpointRegistry::new(endpoints);
    let after = resident_bytes();
    let per_endpoint = (after - before) / ENDPOINTS as f64;
    println!(
        "{ENDPOINTS} idle endpoints (config moved in, built, indexed): {:.1} MiB more resident, {per_endpoint:.0} bytes each",
        (after - before) / (1024.0 * 1024.0)
    );
    assert_eq!(registry.snapshot().endpoints().len(), ENDPOINTS);
    assert!(
        per_endpoint <= 1024.0,
        "an idle endpoint costs {per_endpoint:.0} bytes (> 1 KiB)"
    );
}

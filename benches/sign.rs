//! Signing one request per scheme, for a typical 500-byte event body.

use criterion::{Criterion, criterion_group, criterion_main};
use hookstream::sign::{SignInput, SignatureScheme, Signer};

fn bench(c: &mut Criterion) {
    let body = hookstream::samples::SAMPLES[3].1.as_bytes();
    let mut group = c.benchmark_group("sign");
    for (scheme, secret) in [
        (
            SignatureScheme::Standard,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        (SignatureScheme::Mender, "a3f1c2d4e5f60718293a4b5c6d7e8f90"),
        (SignatureScheme::Openmdm, "openmdm-secret"),
        (SignatureScheme::Github, "github-secret"),
    ] {
        let signer = Signer::new(scheme, Some(secret), None).expect("signer");
        let input = SignInput {
            webhook_id: "msg_0123456789abcdef",
            timestamp: 1_776_254_400,
            body,
            event_type: "device-provisioned",
            event_id: "7f3e9c20-9a8f-4e2a-8e29-4b5f0a3c0d10",
            event_time_ms: 1_776_254_400_000,
        };
        group.bench_function(scheme.name(), |b| {
            b.iter(|| {
                let mut n = 0;
                signer.sign(&input, |_, v| n += v.len());
                n
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

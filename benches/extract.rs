//! Field extraction per event for each preset, on the built-in sample events.

use criterion::{Criterion, criterion_group, criterion_main};
use hookstream::samples::SAMPLES;
use hookstream::source::extract::{Coordinates, Extractor, Preset};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("extract");
    for (name, body) in SAMPLES {
        let preset = match name.split('-').next().unwrap_or_default() {
            "mender" => Preset::Mender,
            "openmdm" => Preset::Openmdm,
            "magistrala" => Preset::Magistrala,
            _ => Preset::Cmdb,
        };
        let mut extractor = Extractor::preset(preset);
        let coords = Coordinates {
            topic: "t",
            partition: 0,
            offset: 1,
        };
        group.bench_function(name.trim_end_matches(".json"), |b| {
            b.iter(|| {
                extractor
                    .extract(body.as_bytes(), &|_| None, &coords, 1 << 20)
                    .map(|e| e.event_type().len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Timing of a similar-case query over 10,000 signatures: the ranking alone (an index built
//! once), and what the service does per request (parse the stored signatures, learn the
//! scales, rank). Signatures are synthetic: 48 regions (the JHU atlas's count) with seeded
//! values and up to four clusters each.
//!
//! Run: `cargo bench --bench similar_query`.

use criterion::{Criterion, criterion_group, criterion_main};
use pedinorm_templates::similarity::{ClusterKind, ClusterPoint, Signature, SignatureIndex};
use pedinorm_validation::rng::{stream, uniform};
use std::collections::BTreeMap;
use std::hint::black_box;

fn signatures(count: usize) -> Vec<(usize, Signature)> {
    let mut random = stream(7, 0);
    let mut next = move || uniform(&mut random, -1.0, 1.0);
    let kinds = [ClusterKind::IntensityAbove, ClusterKind::IntensityBelow, ClusterKind::LogjacBelow];
    (0..count)
        .map(|i| {
            let regions: BTreeMap<String, [f64; 4]> = (0..48)
                .map(|r| {
                    let z = 2.0 * next();
                    (format!("region {r}"), [z, 0.1 * z, -z, 0.05 * z.abs()])
                })
                .collect();
            let clusters = (0..i % 5)
                .map(|c| ClusterPoint {
                    kind: kinds[c % kinds.len()],
                    peak_template_mm: [60.0 * next(), 80.0 * next(), 50.0 * next()],
                    weight: 3.0 + next(),
                })
                .collect();
            let signature =
                Signature { age_years: 9.0 + 8.0 * next(), regions, clusters, centiles: BTreeMap::new() };
            (i, signature)
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let entries = signatures(10_000);
    let query = entries[17].1.clone();
    let index = SignatureIndex::new(entries.clone());
    c.bench_function("similar query 10k signatures, k=10", |b| {
        b.iter(|| black_box(index.query(&query, 10, |&i| i != 17)))
    });
    // The service keeps signatures as JSON in SQLite and indexes the A1 cases per request.
    let stored: Vec<String> = entries.iter().map(|(_, s)| serde_json::to_string(s).unwrap()).collect();
    let mut group = c.benchmark_group("per request");
    group.sample_size(10);
    group.bench_function("parse, index and query 10k stored signatures", |b| {
        b.iter(|| {
            let parsed: Vec<(usize, Signature)> =
                stored.iter().enumerate().map(|(i, text)| (i, serde_json::from_str(text).unwrap())).collect();
            black_box(SignatureIndex::new(parsed).query(&query, 10, |&i| i != 17))
        })
    });
    group.finish();
}

criterion_group!(similar_query, benches);
criterion_main!(similar_query);

//! Config load: open the store, decrypt, validate, for a 1 KB and a 1 MB config.
#![allow(missing_docs)] // criterion's macros define undocumented public functions

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use restinpieces_litestream::{ConfigStore, LitestreamConfig, Strictness};

/// A valid config of about `size` bytes: enough databases to reach it.
fn config_of_size(size: usize) -> String {
    let mut yaml = String::from("# benchmark config\ndbs:\n");
    let mut i = 0;
    while yaml.len() < size {
        yaml.push_str(&format!(
            "  - path: /data/db-{i:06}.db\n    replica:\n      type: file\n      path: /backups/db-{i:06}\n      sync-interval: 1s\n"
        ));
        i += 1;
    }
    yaml
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("age.key");
    restinpieces_litestream::keys::generate(&key).unwrap();
    for (name, size) in [("1KB", 1024), ("1MB", 1024 * 1024)] {
        let db = dir.path().join(format!("{name}.db"));
        let yaml = config_of_size(size);
        let store = ConfigStore::open_or_create(&db, &key).unwrap();
        store
            .save("litestream", yaml.as_bytes(), "yml", "bench")
            .unwrap();
        c.bench_function(
            &format!("config load {name} (open + decrypt + validate)"),
            |b| {
                b.iter(|| {
                    let store = ConfigStore::open(&db, &key).unwrap();
                    let stored = store.load("litestream", 0).unwrap();
                    let config =
                        LitestreamConfig::parse(&stored.plaintext, Strictness::Lenient).unwrap();
                    black_box(config.dbs().len())
                })
            },
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);

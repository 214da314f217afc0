//! The record codec: encode and decode of one stored message.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use waq::model::Message;
use waq::store::codec;

mod common;

fn bench(c: &mut Criterion) {
    let m = common::template_message(42, "14155551234");
    let bytes = codec::encode(&m).unwrap();
    println!("record size: {} bytes", bytes.len());
    c.bench_function("codec/encode", |b| {
        b.iter(|| codec::encode(black_box(&m)).unwrap())
    });
    c.bench_function("codec/decode", |b| {
        b.iter(|| codec::decode::<Message>(black_box(&bytes)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

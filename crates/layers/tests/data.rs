//! Datasets and data readers.

use std::collections::BTreeSet;
use std::io::Write;

use rime_layers::Error;
use rime_layers::data::{Batch, Dataset, IdxData, read_csv, read_idx};
use rime_tensor::Tensor;

fn ramp(n: usize) -> Dataset {
    let x = Tensor::from_vec((0..2 * n).map(|i| i as f32).collect(), [n, 2]).unwrap();
    let y = Tensor::vector((0..n).map(|i| i as f32).collect());
    Dataset::from_tensors(x, y).unwrap()
}

fn ids(batches: impl Iterator<Item = rime_layers::Result<Batch>>) -> Vec<Vec<usize>> {
    batches
        .map(|b| {
            let b = b.unwrap();
            // x rows are [2i, 2i+1]: check features and targets stay paired
            let x = b.inputs[0].to_float().unwrap().to_vec();
            let y = b.targets[0].to_float().unwrap().to_vec();
            for (k, yi) in y.iter().enumerate() {
                assert_eq!(x[2 * k], 2.0 * yi);
            }
            y.iter().map(|&v| v as usize).collect()
        })
        .collect()
}

#[test]
fn batches_keep_the_last_partial_batch_unless_dropped() {
    let d = ramp(7).batch(3).unwrap();
    assert_eq!(d.num_batches(), 3);
    assert_eq!(ids(d.iter()), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    let d = d.drop_remainder(true);
    assert_eq!(d.num_batches(), 2);
    assert_eq!(ids(d.iter()), vec![vec![0, 1, 2], vec![3, 4, 5]]);
    assert!(matches!(ramp(3).batch(0), Err(Error::Data { .. })));
}

#[test]
fn shuffling_is_a_seeded_permutation_per_epoch() {
    let d = ramp(50).batch(8).unwrap().shuffle(11);
    let e0: Vec<usize> = ids(d.epoch(0)).concat();
    let e1: Vec<usize> = ids(d.epoch(1)).concat();
    assert_eq!(e0.iter().copied().collect::<BTreeSet<_>>().len(), 50);
    assert_eq!(e1.iter().copied().collect::<BTreeSet<_>>().len(), 50);
    assert_ne!(e0, e1, "each epoch gets a new order");
    assert_ne!(e0, (0..50).collect::<Vec<_>>());
    // the same (seed, epoch) gives the same order, in a fresh dataset too
    let again = ramp(50).batch(8).unwrap().shuffle(11);
    assert_eq!(ids(again.epoch(1)).concat(), e1);
    let other = ramp(50).batch(8).unwrap().shuffle(12);
    assert_ne!(ids(other.epoch(0)).concat(), e0);
}

#[test]
fn take_skip_split_shard_select_samples() {
    let d = ramp(10).batch(4).unwrap();
    assert_eq!(ids(d.clone().take(3).iter()).concat(), vec![0, 1, 2]);
    assert_eq!(ids(d.clone().skip(8).iter()).concat(), vec![8, 9]);
    assert_eq!(d.clone().take(100).len(), 10);
    let (train, val) = d.clone().split(0.25).unwrap();
    // Keras: split_at = int(10 * 0.75) = 7, validation is the tail
    assert_eq!(ids(train.iter()).concat(), (0..7).collect::<Vec<_>>());
    assert_eq!(ids(val.iter()).concat(), vec![7, 8, 9]);
    assert!(d.clone().split(1.0).is_err());
    assert!(d.clone().split(0.0).is_err());
    let shards: Vec<Vec<usize>> = (0..3)
        .map(|i| ids(d.clone().shard(i, 3).unwrap().iter()).concat())
        .collect();
    assert_eq!(shards, vec![vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);
    assert!(d.clone().shard(3, 3).is_err());
    // a fixed random permutation, then a split: disjoint, complete, the same every epoch
    let (a, b) = d.clone().permuted(5).split(0.3).unwrap();
    let (ea, eb) = (ids(a.epoch(0)).concat(), ids(b.epoch(7)).concat());
    assert_eq!((ea.len(), eb.len()), (7, 3));
    assert_eq!(ids(a.epoch(1)).concat(), ea);
    let mut all: Vec<usize> = ea.iter().chain(&eb).copied().collect();
    assert_ne!(all, (0..10).collect::<Vec<_>>());
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    assert!(d.shard(0, 0).is_err());
}

#[test]
fn map_transforms_batches_and_errors_surface() {
    let d = ramp(4).batch(2).unwrap().map(|mut b| {
        b.inputs[0] = b.inputs[0].to_float()?.mul_scalar(10.0).into();
        Ok(b)
    });
    let b = d.iter().next().unwrap().unwrap();
    assert_eq!(
        b.inputs[0].to_float().unwrap().to_vec(),
        vec![0.0, 10.0, 20.0, 30.0]
    );
    let failing = ramp(4).map(|_| {
        Err(Error::InvalidArgument {
            what: "map".into(),
            msg: "boom".into(),
        })
    });
    assert!(failing.iter().next().unwrap().is_err());
}

#[test]
fn prefetching_gives_the_same_batches() {
    let d = ramp(37).batch(5).unwrap().shuffle(3);
    for epoch in 0..3 {
        let plain: Vec<Batch> = d.epoch(epoch).map(Result::unwrap).collect();
        let ahead: Vec<Batch> = d
            .clone()
            .prefetch(2)
            .epoch(epoch)
            .map(Result::unwrap)
            .collect();
        assert_eq!(plain, ahead);
    }
    // stopping early releases the producer thread (no hang)
    let mut it = d.prefetch(1).epoch(0);
    it.next();
    drop(it);
}

#[test]
fn several_inputs_and_mismatched_counts() {
    let a = Tensor::<f32>::zeros([4, 3]).unwrap();
    let b = Tensor::<f32>::ones([4]).unwrap();
    let y = Tensor::<f32>::zeros([4, 1]).unwrap();
    let d = Dataset::from_many(vec![a.clone(), b], vec![y.clone()]).unwrap();
    let batch = d.batch(3).unwrap().iter().next().unwrap().unwrap();
    assert_eq!(batch.inputs.len(), 2);
    assert_eq!(batch.inputs[1].dims(), &[3]);
    assert_eq!(batch.len(), 3);
    let err =
        Dataset::from_many(vec![a.clone()], vec![Tensor::<f32>::zeros([5]).unwrap()]).unwrap_err();
    assert!(err.to_string().contains("5 samples"), "{err}");
    assert!(Dataset::<f32>::from_many(Vec::<Tensor<f32>>::new(), vec![y]).is_err());
    assert!(Dataset::from_features(Tensor::<f32>::scalar(1.0)).is_err());
}

#[test]
fn csv_reader_reads_numbers_and_names_bad_fields() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("rime_data_test_{}.csv", std::process::id()));
    std::fs::write(&path, "x1,x2,y\n1,2,0\n3.5,-4,1\n").unwrap();
    let t = read_csv(&path, true).unwrap();
    assert_eq!((t.rows, t.cols), (2, 3));
    assert_eq!(
        t.columns::<f64>(0..2).unwrap().to_vec(),
        vec![1.0, 2.0, 3.5, -4.0]
    );
    assert!(t.columns::<f32>(2..4).is_err());
    // labels as integers, exactly; a fractional or missing column is an error
    let y = t.int_column(2).unwrap();
    assert_eq!((y.dims(), y.to_vec()), (&[2][..], vec![0i64, 1]));
    assert_eq!(t.int_column(1).unwrap().to_vec(), vec![2, -4]);
    let err = t.int_column(0).unwrap_err();
    assert!(err.to_string().contains("row 2, column 1"), "{err}");
    assert!(t.int_column(3).is_err());
    std::fs::write(&path, "1,2\n3,x\n").unwrap();
    let err = read_csv(&path, false).unwrap_err();
    assert!(matches!(err, Error::Data { .. }));
    assert!(err.to_string().contains("row 2, column 2"), "{err}");
    std::fs::write(&path, "1,2\n3\n").unwrap();
    assert!(read_csv(&path, false).is_err());
    std::fs::remove_file(&path).ok();
    assert!(read_csv(dir.join("rime_no_such_file.csv"), false).is_err());
}

#[test]
fn csv_reader_reads_the_gzipped_digits() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/digits.csv.gz");
    let t = read_csv(path, false).unwrap();
    assert_eq!((t.rows, t.cols), (1797, 65));
    let labels = t.column::<f32>(64).unwrap().to_vec();
    assert!(
        labels
            .iter()
            .all(|&l| (0.0..10.0).contains(&l) && l.fract() == 0.0)
    );
    // the same labels as integers; per class counts as the file has them
    let ints = t.int_column(64).unwrap();
    assert_eq!(ints.to_dtype::<f32>().unwrap().to_vec(), labels);
    let mut counts = [0usize; 10];
    ints.as_slice()
        .iter()
        .for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    // held as integers by a dataset and served so
    let data = Dataset::from_tensors(t.columns::<f32>(0..64).unwrap(), ints.clone())
        .unwrap()
        .batch(1000)
        .unwrap();
    let batches: Vec<Batch> = data.iter().collect::<Result<_, _>>().unwrap();
    let served: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.targets[0].as_int().expect("integer targets").to_vec())
        .collect();
    assert_eq!(served, ints.to_vec());
}

fn idx_bytes(kind: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, kind, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

#[test]
fn idx_reader_reads_plain_and_gzip_and_rejects_bad_headers() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("rime_idx_test_{}", std::process::id()));
    let images = idx_bytes(8, &[2, 2, 2], &[0, 255, 1, 2, 3, 4, 5, 6]);
    std::fs::write(&path, &images).unwrap();
    let a = read_idx(&path).unwrap();
    assert_eq!(a.dims, [2, 2, 2]);
    let t = a.to_tensor::<f32>(1.0 / 255.0).unwrap();
    assert_eq!(t.dims(), &[2, 2, 2]);
    assert_eq!(t.to_vec()[1], 1.0);

    let gz = dir.join(format!("rime_idx_test_{}.gz", std::process::id()));
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&images).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    assert_eq!(read_idx(&gz).unwrap(), a);

    // bytes as integers, exactly
    let ints = a.to_int_tensor().unwrap();
    assert_eq!(ints.dims(), &[2, 2, 2]);
    assert_eq!(ints.to_vec(), vec![0i64, 255, 1, 2, 3, 4, 5, 6]);

    let i32s = idx_bytes(0x0C, &[2], &[0, 0, 1, 0, 0xff, 0xff, 0xff, 0xfe]);
    std::fs::write(&path, i32s).unwrap();
    let b = read_idx(&path).unwrap();
    assert_eq!(b.data, IdxData::I32(vec![256, -2]));
    assert_eq!(b.to_int_tensor().unwrap().to_vec(), vec![256i64, -2]);
    let i8s = idx_bytes(0x09, &[2], &[0x80, 0x7f]);
    std::fs::write(&path, i8s).unwrap();
    assert_eq!(
        read_idx(&path).unwrap().to_int_tensor().unwrap().to_vec(),
        vec![-128i64, 127]
    );
    let f32s = idx_bytes(0x0D, &[1], &1.5f32.to_be_bytes());
    std::fs::write(&path, f32s).unwrap();
    let err = read_idx(&path).unwrap().to_int_tensor().unwrap_err();
    assert!(matches!(err, Error::Data { .. }), "{err}");

    let bad: Vec<(Vec<u8>, &str)> = vec![
        (vec![1, 0, 8, 1, 0, 0, 0, 1, 0], "magic"),
        (idx_bytes(0x07, &[1], &[0]), "element type"),
        (idx_bytes(8, &[3], &[1, 2]), "truncated"),
        (idx_bytes(8, &[1], &[1, 2]), "trailing"),
        (
            idx_bytes(0x0E, &[u32::MAX, u32::MAX, u32::MAX], &[]),
            "exceed",
        ),
        (vec![0, 0, 8], "header"),
    ];
    for (bytes, needle) in bad {
        std::fs::write(&path, &bytes).unwrap();
        let err = read_idx(&path).unwrap_err();
        assert!(matches!(err, Error::Data { .. }));
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    }
    std::fs::remove_file(&path).ok();
    std::fs::remove_file(&gz).ok();
}

#[test]
fn idx_reader_reads_fashion_mnist_when_installed() {
    let dir = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    let labels = dir.join("t10k-labels-idx1-ubyte.gz");
    if !labels.exists() {
        eprintln!("skipped: Debian's dataset-fashion-mnist is not installed");
        return;
    }
    let l = read_idx(&labels).unwrap();
    assert_eq!(l.dims, [10000]);
    let IdxData::U8(v) = &l.data else {
        panic!("labels are bytes")
    };
    assert!(v.iter().all(|&c| c < 10));
    let ints = l.to_int_tensor().unwrap();
    assert_eq!(ints.dims(), &[10000]);
    assert!(
        ints.as_slice()
            .iter()
            .zip(v)
            .all(|(&i, &b)| i == i64::from(b))
    );
    let x = read_idx(dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(x.dims, [10000, 28, 28]);
}

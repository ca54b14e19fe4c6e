//! Weight loaders: `.pth` (legacy and zip), safetensors and npz read what they should, and
//! truncated, bit-flipped or lying files are typed errors — never panics, never huge
//! allocations.

use std::io::Write;

use actmax_layers::loaders::{load_weights_from, pth, safetensors, StateDict, WeightFormat};
use actmax_layers::LoadError;
use actmax_tensor::Tensor;
use proptest::prelude::*;

/// A tensor to save: name, shape, values, and whether to store it transposed (a
/// non-contiguous view, as `torch.save` of `w.t()` writes).
struct Item {
    name: &'static str,
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn items() -> Vec<Item> {
    vec![
        Item { name: "conv.weight", shape: vec![2, 1, 3, 3], values: (0..18).map(|i| i as f32 * 0.5 - 4.0).collect() },
        Item { name: "conv.bias", shape: vec![2], values: vec![0.25, -1.5] },
        Item { name: "fc.weight", shape: vec![3, 2], values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] },
    ]
}

// ---- a minimal torch.save writer (pickle protocol 2), from the format's description ----

fn text(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
}

fn int(out: &mut Vec<u8>, v: i32) {
    out.push(b'J');
    out.extend(v.to_le_bytes());
}

fn tuple(out: &mut Vec<u8>, vals: &[usize]) {
    out.push(b'(');
    for &v in vals {
        int(out, v as i32);
    }
    out.push(b't');
}

/// The state-dict pickle. `fc.weight` is stored as the transpose view of a `[2, 3]`
/// storage (stride (1, 3)), the other tensors contiguously; storage keys are "0", "1", ...
fn state_dict_pickle(items: &[Item]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(b"ccollections\nOrderedDict\n)R(");
    for (k, it) in items.iter().enumerate() {
        text(&mut p, it.name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.push(b'(');
        text(&mut p, "storage");
        p.extend(b"ctorch\nFloatStorage\n");
        text(&mut p, &k.to_string());
        text(&mut p, "cpu");
        int(&mut p, it.values.len() as i32);
        p.extend(b"tQ");
        int(&mut p, 0);
        tuple(&mut p, &it.shape);
        let stride: Vec<usize> = if it.name == "fc.weight" {
            vec![1, it.shape[0]]
        } else {
            (0..it.shape.len()).map(|d| it.shape[d + 1..].iter().product()).collect()
        };
        tuple(&mut p, &stride);
        p.push(0x89);
        p.extend(b"ccollections\nOrderedDict\n)R");
        p.extend(b"tR");
    }
    p.extend(b"u.");
    p
}

/// Storage bytes: for `fc.weight`, the transposed layout its stride describes.
fn storage(it: &Item) -> Vec<u8> {
    let vals: Vec<f32> = if it.name == "fc.weight" {
        let (r, c) = (it.shape[0], it.shape[1]);
        (0..r * c).map(|i| it.values[(i % r) * c + i / r]).collect()
    } else {
        it.values.clone()
    };
    vals.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn legacy_pth(items: &[Item]) -> Vec<u8> {
    let mut f = vec![0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.'];
    f.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']);
    f.extend([0x80, 2, b'}', b'.']);
    f.extend(state_dict_pickle(items));
    f.extend([0x80, 2, b']', b'(']);
    for k in 0..items.len() {
        text(&mut f, &k.to_string());
    }
    f.extend(b"e.");
    for it in items {
        f.extend((it.values.len() as u64).to_le_bytes());
        f.extend(storage(it));
    }
    f
}

fn zip_pth(items: &[Item]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(&state_dict_pickle(items)).unwrap();
    for (k, it) in items.iter().enumerate() {
        z.start_file(format!("archive/data/{k}"), opts).unwrap();
        z.write_all(&storage(it)).unwrap();
    }
    z.start_file("archive/version", opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
    buf.into_inner()
}

fn check(sd: &StateDict) {
    for it in items() {
        let t = &sd[it.name];
        assert_eq!(t.shape(), it.shape.as_slice(), "{}", it.name);
        assert_eq!(t.iter().copied().collect::<Vec<_>>(), it.values, "{}", it.name);
    }
}

#[test]
fn legacy_and_zip_pth_read_the_same_tensors() {
    check(&pth::read(&legacy_pth(&items())).unwrap());
    check(&pth::read(&zip_pth(&items())).unwrap());
}

#[test]
fn safetensors_and_npz_round_trip() {
    let sd: StateDict = items()
        .into_iter()
        .map(|it| (it.name.to_string(), Tensor::from_shape_vec(it.shape, it.values).unwrap()))
        .collect();
    check(&safetensors::read(&safetensors::write(&sd).unwrap()).unwrap());
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut npz = ndarray_npy_writer(&mut buf);
        for (k, v) in &sd {
            npz.add_array(k.as_str(), v).unwrap();
        }
        npz.finish().unwrap();
    }
    check(&load_weights_from(&buf.into_inner(), WeightFormat::Npz).unwrap());
}

fn ndarray_npy_writer<W: std::io::Write + std::io::Seek>(w: W) -> ndarray_npy::NpzWriter<W> {
    ndarray_npy::NpzWriter::new(w)
}

#[test]
fn a_pickle_that_calls_anything_else_is_refused() {
    // `os.system('echo pwned')` as a pickle: must be refused, by name, without running.
    let mut p = vec![0x80, 2];
    p.extend(b"cos\nsystem\n(");
    text(&mut p, "echo pwned");
    p.extend(b"tR.");
    let mut f = legacy_pth(&items());
    let start = 15 + 6 + 4; // magic, protocol and sys-info pickles
    f.splice(start.., p);
    match pth::read(&f) {
        Err(LoadError::Unsupported { msg, .. }) => assert!(msg.contains("os.system"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_storage_claiming_more_than_the_file_holds_is_an_error() {
    let mut f = legacy_pth(&items());
    // The first storage's element count sits right after the key-list pickle.
    let last = items().iter().map(|it| 8 + it.values.len() * 4).sum::<usize>();
    let at = f.len() - last;
    f[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(pth::read(&f), Err(LoadError::Format { .. })));
}

fn no_panic(bytes: &[u8], format: WeightFormat) -> Result<(), TestCaseError> {
    let r = std::panic::catch_unwind(|| load_weights_from(bytes, format).map(|_| ()));
    prop_assert!(r.is_ok(), "the loader panicked");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every truncation of a valid file is an error (or, at most, the same tensors).
    #[test]
    fn truncated_files_are_errors(cut in 0.0f64..1.0, which in 0usize..4) {
        let sd: StateDict = items().into_iter().map(|it| (it.name.to_string(), Tensor::from_shape_vec(it.shape, it.values).unwrap())).collect();
        let (bytes, format) = match which {
            0 => (legacy_pth(&items()), WeightFormat::Pth),
            1 => (zip_pth(&items()), WeightFormat::Pth),
            2 => (safetensors::write(&sd).unwrap(), WeightFormat::Safetensors),
            _ => {
                let mut buf = std::io::Cursor::new(Vec::new());
                let mut npz = ndarray_npy_writer(&mut buf);
                for (k, v) in &sd { npz.add_array(k.as_str(), v).unwrap(); }
                npz.finish().unwrap();
                (buf.into_inner(), WeightFormat::Npz)
            }
        };
        let n = ((bytes.len() as f64) * cut) as usize;
        no_panic(&bytes[..n], format)?;
        prop_assert!(load_weights_from(&bytes[..n], format).is_err(), "a file cut at {n} of {} bytes loaded", bytes.len());
    }

    /// Random bit flips and random bytes never panic.
    #[test]
    fn corrupt_files_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8), which in 0usize..3, junk in prop::collection::vec(any::<u8>(), 0..256)) {
        let sd: StateDict = items().into_iter().map(|it| (it.name.to_string(), Tensor::from_shape_vec(it.shape, it.values).unwrap())).collect();
        let (mut bytes, format) = match which {
            0 => (legacy_pth(&items()), WeightFormat::Pth),
            1 => (zip_pth(&items()), WeightFormat::Pth),
            _ => (safetensors::write(&sd).unwrap(), WeightFormat::Safetensors),
        };
        for (i, bit) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        no_panic(&bytes, format)?;
        for f in [WeightFormat::Pth, WeightFormat::Safetensors, WeightFormat::Npz] {
            no_panic(&junk, f)?;
        }
    }
}

#[test]
fn a_storage_of_an_unknown_dtype_is_unsupported() {
    let mut f = legacy_pth(&items());
    // Same length, so every offset stays valid: only the dtype changes.
    let (from, to) = (b"FloatStorage", b"QInt8Storage");
    let at = f.windows(from.len()).position(|w| w == from).unwrap();
    f[at..at + from.len()].copy_from_slice(to);
    match pth::read(&f) {
        Err(LoadError::Unsupported { msg, .. }) => assert!(msg.contains("QInt8Storage"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

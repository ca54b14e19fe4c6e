//! Byte mutations, stacked a few at a time (AFL's "havoc"), and the same inside one entry
//! of a zip archive, re-packed: a `.pth`, `.npz` or `.keras` zip checks each entry's CRC,
//! so flipping bytes of the archive itself rarely reaches the pickle, npy or HDF5 reader
//! behind it.

use std::io::{Cursor, Read, Write};

use rand::rngs::StdRng;
use rand::Rng;

/// Values that sit on the edges readers get wrong: zero, one, sign bits, all ones.
const INTERESTING: [u64; 10] = [0, 1, 0x7f, 0x80, 0xff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 40, u64::MAX];

/// The largest input a mutation may grow to, so the corpus cannot balloon.
pub const MAX_LEN: usize = 4 << 20;

/// Applies 1–8 random byte mutations to `data` (one, half the time: most files carry
/// checks that several changes at once rarely all pass); `other` is a second corpus
/// entry to splice from.
pub fn havoc(data: &mut Vec<u8>, other: &[u8], rng: &mut StdRng) {
    let n = if rng.random() { 1 } else { 1usize << rng.random_range(1..4) };
    for _ in 0..n {
        mutate_once(data, other, rng);
    }
    data.truncate(MAX_LEN);
}

fn mutate_once(data: &mut Vec<u8>, other: &[u8], rng: &mut StdRng) {
    if data.is_empty() {
        data.push(rng.random());
        return;
    }
    let len = data.len();
    let at = rng.random_range(0..len);
    match rng.random_range(0..11) {
        0 => data[at] ^= 1 << rng.random_range(0..8),
        1 => data[at] = rng.random(),
        2 => data[at] = INTERESTING[rng.random_range(0..5)] as u8,
        3 => {
            // An interesting 2, 4 or 8-byte value, either endianness: sizes, counts, offsets.
            let width = 2usize << rng.random_range(0..3);
            let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
            let bytes = if rng.random() { v.to_le_bytes() } else { v.to_be_bytes() };
            let end = (at + width).min(len);
            let src = if rng.random() { &bytes[..width] } else { &bytes[8 - width..] };
            data[at..end].copy_from_slice(&src[..end - at]);
        }
        4 => data[at] = data[at].wrapping_add(rng.random_range(1..=35u8)).wrapping_sub(rng.random_range(0..=35u8)),
        5 => {
            let end = (at + rng.random_range(1..=64)).min(len);
            data.drain(at..end);
        }
        6 => {
            let junk: Vec<u8> = (0..rng.random_range(1..=32)).map(|_| rng.random()).collect();
            data.splice(at..at, junk);
        }
        7 => {
            // A copy of a block of the input elsewhere in it: repeated headers, records.
            let from = rng.random_range(0..len);
            let n = rng.random_range(1..=64).min(len - from);
            let block = data[from..from + n].to_vec();
            if rng.random() {
                data.splice(at..at, block);
            } else {
                let end = (at + n).min(len);
                data[at..end].copy_from_slice(&block[..end - at]);
            }
        }
        8 => data.truncate(at),
        9 if !other.is_empty() => {
            // This input's head, the other's tail.
            let cut = rng.random_range(0..other.len());
            data.truncate(at);
            data.extend_from_slice(&other[cut..]);
        }
        _ => {
            // A decimal number where text is: JSON configs, pickle INTs.
            let s = INTERESTING[rng.random_range(0..INTERESTING.len())].to_string();
            let end = (at + s.len()).min(len);
            data.splice(at..end, s.bytes());
        }
    }
}

/// Recomputes the CRC of every whole chunk of a PNG, so that a mutation reaches the
/// decoder behind the checksum (mutated lengths end the walk where they stop making sense).
pub fn fix_png_crcs(data: &mut [u8]) {
    let mut at = 8;
    while let Some(len) = data.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) {
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e + 4 <= data.len()) else { return };
        let crc = crc32fast::hash(&data[at + 4..end]);
        data[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

/// The entries of a zip archive, or `None` where `data` is not one the `zip` crate reads.
pub fn unzip(data: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(data)).ok()?;
    let mut entries = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).ok()?;
        if file.size() > MAX_LEN as u64 {
            return None;
        }
        let mut bytes = Vec::with_capacity(file.size() as usize);
        file.read_to_end(&mut bytes).ok()?;
        entries.push((file.name().to_string(), bytes));
    }
    Some(entries)
}

/// A zip archive of `entries`, stored (the readers must take stored entries too: torch
/// writes them so).
pub fn rezip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        // Names are the archive's own, so neither call fails on a writer in memory.
        if out.start_file(name.as_str(), options).is_ok() {
            let _ = out.write_all(bytes);
        }
    }
    out.finish().map(Cursor::into_inner).unwrap_or_default()
}

/// Mutates one entry of the archive `entries` (or drops or duplicates one) and re-packs it.
pub fn mutate_inside(entries: &[(String, Vec<u8>)], rng: &mut StdRng) -> Vec<u8> {
    let mut entries = entries.to_vec();
    if entries.is_empty() {
        return rezip(&entries);
    }
    let i = rng.random_range(0..entries.len());
    match rng.random_range(0..16) {
        0 => drop(entries.remove(i)),
        1 => entries.push(entries[i].clone()),
        _ => {
            let other = entries[rng.random_range(0..entries.len())].1.clone();
            havoc(&mut entries[i].1, &other, rng);
        }
    }
    rezip(&entries)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn the_same_seed_mutates_the_same_way_and_stays_bounded() {
        let seed: Vec<u8> = (0..200u8).collect();
        let run = |s| {
            let mut rng = StdRng::seed_from_u64(s);
            let mut d = seed.clone();
            (0..500)
                .map(|_| {
                    havoc(&mut d, &seed, &mut rng);
                    d.clone()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        assert!(run(3).iter().all(|d| d.len() <= MAX_LEN));
        assert!(run(3).iter().any(|d| d != &seed));
    }

    #[test]
    fn an_archive_round_trips_and_mutates_inside() {
        let entries = vec![("a/data.pkl".to_string(), b"hello".to_vec()), ("a/data/0".to_string(), vec![7; 64])];
        let zipped = rezip(&entries);
        assert_eq!(unzip(&zipped).unwrap(), entries);
        let mut rng = StdRng::seed_from_u64(1);
        let changed =
            (0..20).filter(|_| unzip(&mutate_inside(&entries, &mut rng)).is_some_and(|e| e != entries)).count();
        assert!(changed > 10, "{changed} of 20 mutations changed an entry");
        assert!(unzip(b"not a zip").is_none());
    }

    #[test]
    fn png_crcs_are_recomputed_over_type_and_data() {
        // IHDR-like chunk: length 2, type "abcd", data [1, 2], a wrong CRC; then a truncated one.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x02abcd\x01\x02\0\0\0\0\0\0\0\xffxy".to_vec();
        fix_png_crcs(&mut png);
        assert_eq!(&png[18..22], &crc32fast::hash(b"abcd\x01\x02").to_be_bytes());
        assert_eq!(&png[22..], b"\0\0\0\xffxy");
    }
}

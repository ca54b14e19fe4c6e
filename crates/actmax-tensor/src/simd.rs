//! SIMD helpers the kernels share: lane masks (AVX2, AVX-512), a 16 × 16 transpose, and
//! the stride-2 gather of a row.

use crate::backprop_modes::PassBand;
use crate::gemm::direct::Isa;

/// `dst[j] = src[2j]` for every `j` (`src` holds at least `2·dst.len() − 1` values): a
/// stride-2 conv's im2col row, in vectors on `isa`.
pub(crate) fn every_second(isa: Isa, src: &[f32], dst: &mut [f32]) {
    assert!(src.len() + 1 >= 2 * dst.len(), "every_second: the source is too short");
    match isa {
        // Safety: the ISA was detected on this CPU; the lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::every_second(src, dst) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::every_second(src, dst) },
        _ => dst.iter_mut().zip(src.iter().step_by(2)).for_each(|(d, s)| *d = *s),
    }
}

/// `bits[w]` bit `j` = `band.passes(y[16w + j])`, and where `above` is not empty
/// `above[w]` bit `j` = `y[16w + j] > band.lo` (the first compare of the two), in vectors
/// on `isa`. `y.len() == 16 · bits.len()`, `above` as long or empty.
pub(crate) fn pass_bits(isa: Isa, y: &[f32], band: PassBand, bits: &mut [u16], above: &mut [u16]) {
    assert_eq!(y.len(), 16 * bits.len(), "pass_bits: 16 values per word");
    assert!(above.is_empty() || above.len() == bits.len(), "pass_bits: one above word per pass word");
    match isa {
        // Safety: the ISA was detected on this CPU; the lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::pass_bits(y, band, bits, above) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::pass_bits(y, band, bits, above) },
        _ => {
            let word = |chunk: &[f32], f: &dyn Fn(f32) -> bool| {
                chunk.iter().enumerate().fold(0, |b, (j, &v)| b | (u16::from(f(v)) << j))
            };
            for (w, chunk) in bits.iter_mut().zip(y.chunks_exact(16)) {
                *w = word(chunk, &|v| band.passes(v));
            }
            for (a, chunk) in above.iter_mut().zip(y.chunks_exact(16)) {
                *a = word(chunk, &|v| v > band.lo);
            }
        }
    }
}

/// `g[16w + j]` set to +0 where bit `j` of `bits[w]` is clear, in vectors on `isa`.
pub(crate) fn mask_by_bits(isa: Isa, g: &mut [f32], bits: &[u16]) {
    assert_eq!(g.len(), 16 * bits.len(), "mask_by_bits: 16 values per word");
    match isa {
        // Safety: the ISA was detected on this CPU; the lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::mask_by_bits(g, bits) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::mask_by_bits(g, bits) },
        _ => {
            for (chunk, &b) in g.chunks_exact_mut(16).zip(bits) {
                for (j, v) in chunk.iter_mut().enumerate() {
                    if b >> j & 1 == 0 {
                        *v = 0.0;
                    }
                }
            }
        }
    }
}

/// AVX2 helpers (the CPU must have AVX2 wherever they run).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use crate::backprop_modes::PassBand;

    /// [`super::pass_bits`]: two compares and a movemask per 8 values.
    ///
    /// # Safety
    /// AVX2; `y.len() == 16 · bits.len()`, `above` as long or empty.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn pass_bits(y: &[f32], band: PassBand, bits: &mut [u16], above: &mut [u16]) {
        let (lo, hi) = (_mm256_set1_ps(band.lo), band.hi.map(|h| _mm256_set1_ps(h)));
        for (w, b) in bits.iter_mut().enumerate() {
            // The (pass, above) masks of 8 values.
            let half = |h: usize| {
                let v = _mm256_loadu_ps(y.as_ptr().add(16 * w + 8 * h));
                let up = _mm256_cmp_ps::<_CMP_GT_OQ>(v, lo);
                let m = match hi {
                    Some(hi) => _mm256_and_ps(up, _mm256_cmp_ps::<_CMP_LT_OQ>(v, hi)),
                    None => up,
                };
                (_mm256_movemask_ps(m) as u16, _mm256_movemask_ps(up) as u16)
            };
            let ((p0, a0), (p1, a1)) = (half(0), half(1));
            *b = p0 | p1 << 8;
            if let Some(a) = above.get_mut(w) {
                *a = a0 | a1 << 8;
            }
        }
    }

    /// [`super::mask_by_bits`]: each byte of bits spread to a lane mask.
    ///
    /// # Safety
    /// AVX2; `g.len() == 16 · bits.len()`.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn mask_by_bits(g: &mut [f32], bits: &[u16]) {
        let lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        for (w, &b) in bits.iter().enumerate() {
            for h in 0..2 {
                let at = g.as_mut_ptr().add(16 * w + 8 * h);
                let set = _mm256_and_si256(_mm256_set1_epi32(i32::from(b >> (8 * h))), lane_bit);
                let keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(set, lane_bit));
                _mm256_storeu_ps(at, _mm256_and_ps(_mm256_loadu_ps(at), keep));
            }
        }
    }

    /// Lane mask for the first `n` of 8 lanes (AVX2 masked moves take a vector mask).
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn lanes(n: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), idx)
    }

    /// The 8 × 8 transpose of `v` (`out[i]` lane `j` is `v[j]` lane `i`): pairs, then
    /// quads interleaved within 128-bit lanes, then the 128-bit lanes swapped across.
    ///
    /// # Safety
    /// The CPU must have AVX (callers are compiled for AVX2; this inlines into them).
    #[inline(always)]
    pub(crate) unsafe fn transpose8(v: &[__m256; 8]) -> [__m256; 8] {
        let mut t = [_mm256_setzero_ps(); 8];
        for i in 0..4 {
            t[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
        }
        let mut u = [_mm256_setzero_ps(); 8];
        for i in 0..2 {
            let (a, b) = (_mm256_castps_pd(t[4 * i]), _mm256_castps_pd(t[4 * i + 1]));
            let (c, d) = (_mm256_castps_pd(t[4 * i + 2]), _mm256_castps_pd(t[4 * i + 3]));
            u[4 * i] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, c));
            u[4 * i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, c));
            u[4 * i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(b, d));
            u[4 * i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(b, d));
        }
        let mut out = [_mm256_setzero_ps(); 8];
        for i in 0..4 {
            out[i] = _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]);
            out[i + 4] = _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]);
        }
        out
    }

    /// [`super::every_second`], 8 outputs from two masked loads and two shuffles.
    ///
    /// # Safety
    /// AVX2; `src.len() + 1 >= 2 * dst.len()`.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn every_second(src: &[f32], dst: &mut [f32]) {
        for j in (0..dst.len()).step_by(8) {
            // Masked loads: lanes past the source's end are neither read nor needed.
            let left = src.len() - 2 * j;
            let a = _mm256_maskload_ps(src.as_ptr().add(2 * j), lanes(left));
            let b = _mm256_maskload_ps(src.as_ptr().wrapping_add(2 * j + 8), lanes(left.saturating_sub(8)));
            // [a0 a2 b0 b2 | a4 a6 b4 b6], then the middle 64-bit pairs swapped.
            let even = _mm256_shuffle_ps::<0x88>(a, b);
            let even = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(even)));
            _mm256_maskstore_ps(dst.as_mut_ptr().add(j), lanes(dst.len() - j), even);
        }
    }
}

/// AVX-512 helpers (the CPU must have AVX-512F wherever they run).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use crate::backprop_modes::PassBand;

    /// [`super::pass_bits`]: a compare mask per 16 values is the word.
    ///
    /// # Safety
    /// AVX-512F; `y.len() == 16 · bits.len()`, `above` as long or empty.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn pass_bits(y: &[f32], band: PassBand, bits: &mut [u16], above: &mut [u16]) {
        let (lo, hi) = (_mm512_set1_ps(band.lo), band.hi.map(|h| _mm512_set1_ps(h)));
        for (w, b) in bits.iter_mut().enumerate() {
            let v = _mm512_loadu_ps(y.as_ptr().add(16 * w));
            let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, lo);
            *b = match hi {
                Some(hi) => m & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, hi),
                None => m,
            };
            if let Some(a) = above.get_mut(w) {
                *a = m;
            }
        }
    }

    /// [`super::mask_by_bits`]: the word is the zeroing mask of a move.
    ///
    /// # Safety
    /// AVX-512F; `g.len() == 16 · bits.len()`.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn mask_by_bits(g: &mut [f32], bits: &[u16]) {
        for (w, &b) in bits.iter().enumerate() {
            let at = g.as_mut_ptr().add(16 * w);
            _mm512_storeu_ps(at, _mm512_maskz_mov_ps(b, _mm512_loadu_ps(at)));
        }
    }

    /// Lane mask for the first `n` of 16 lanes (all of them from 16 on).
    #[inline(always)]
    pub(crate) fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// The 16 × 16 transpose of `v` (`out[i]` lane `j` is `v[j]` lane `i`): pairs, then
    /// quads interleaved within 128-bit lanes, then the 128-bit lanes shuffled twice.
    ///
    /// # Safety
    /// The CPU must have AVX-512F (callers are compiled for it; this inlines into them).
    #[inline(always)]
    pub(crate) unsafe fn transpose16(v: &[__m512; 16]) -> [__m512; 16] {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let (a, b) = (_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 1]));
            let (c, d) = (_mm512_castps_pd(t[4 * i + 2]), _mm512_castps_pd(t[4 * i + 3]));
            u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
            u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
            u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
            u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
        }
        let mut w = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            w[i] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0x88);
            w[i + 4] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0xdd);
            w[i + 8] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0x88);
            w[i + 12] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0xdd);
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            out[i] = _mm512_shuffle_f32x4(w[i], w[i + 8], 0x88);
            out[i + 8] = _mm512_shuffle_f32x4(w[i], w[i + 8], 0xdd);
        }
        out
    }

    /// [`super::every_second`], 16 outputs from two masked loads and one permute.
    ///
    /// # Safety
    /// AVX-512F; `src.len() + 1 >= 2 * dst.len()`.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn every_second(src: &[f32], dst: &mut [f32]) {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for j in (0..dst.len()).step_by(16) {
            let left = src.len() - 2 * j;
            let a = _mm512_maskz_loadu_ps(lanes(left), src.as_ptr().add(2 * j));
            let b = _mm512_maskz_loadu_ps(lanes(left.saturating_sub(16)), src.as_ptr().wrapping_add(2 * j + 16));
            let v = _mm512_permutex2var_ps(a, even, b);
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(j), lanes(dst.len() - j), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::every_second;
    use crate::gemm::direct::Isa;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_in_register_transposes_transpose() {
        use std::arch::x86_64::*;
        // `out` (n rows of n) against the transpose of the rows 0, 1, 2, … of `n` lanes.
        let check = |out: &[f32], n: usize| {
            for (i, &v) in out.iter().enumerate() {
                assert_eq!(v, ((i % n) * n + i / n) as f32, "{n}×{n}: row {}, column {}", i / n, i % n);
            }
        };
        let isas = Isa::available();
        if isas.contains(&Isa::Avx2) {
            let m: Vec<f32> = (0..64).map(|i| i as f32).collect();
            let mut out = [0.0f32; 64];
            // Safety: AVX2 is available; loads and stores stay inside `m` and `out`.
            unsafe {
                let v: [__m256; 8] = std::array::from_fn(|r| _mm256_loadu_ps(m.as_ptr().add(8 * r)));
                for (r, t) in super::avx2::transpose8(&v).iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add(8 * r), *t);
                }
            }
            check(&out, 8);
        }
        if isas.contains(&Isa::Avx512) {
            let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
            let mut out = [0.0f32; 256];
            // Safety: AVX-512F is available; as above.
            unsafe {
                let v: [__m512; 16] = std::array::from_fn(|r| _mm512_loadu_ps(m.as_ptr().add(16 * r)));
                for (r, t) in super::avx512::transpose16(&v).iter().enumerate() {
                    _mm512_storeu_ps(out.as_mut_ptr().add(16 * r), *t);
                }
            }
            check(&out, 16);
        }
    }

    #[test]
    fn every_second_matches_a_strided_copy_on_every_isa() {
        for n in 1..70 {
            // The shortest source allowed, and one longer: no read past its end.
            for extra in 0..2 {
                let src: Vec<f32> = (0..2 * n - 1 + extra).map(|i| i as f32).collect();
                let want: Vec<f32> = (0..n).map(|j| (2 * j) as f32).collect();
                for isa in Isa::available() {
                    let mut dst = vec![-1.0; n + 3];
                    every_second(isa, &src, &mut dst[..n]);
                    assert_eq!(&dst[..n], &want[..], "{isa:?}, {n} outputs");
                    assert!(dst[n..].iter().all(|&v| v == -1.0), "{isa:?} wrote past {n} outputs");
                }
            }
        }
    }
}

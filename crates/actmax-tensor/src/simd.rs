//! SIMD helpers the kernels share: lane masks (AVX2, AVX-512) and a 16 × 16 transpose.

/// AVX2 helpers (the CPU must have AVX2 wherever they run).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

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
}

/// AVX-512 helpers (the CPU must have AVX-512F wherever they run).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

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
    pub(crate) unsafe fn transpose16(mut v: [__m512; 16]) -> [__m512; 16] {
        // Each stage overwrites the pairs (or quads) it reads, so no array is zeroed
        // first: a zeroed stack array became a `memset` call per tile once spilled.
        for i in 0..8 {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            v[2 * i] = _mm512_unpacklo_ps(a, b);
            v[2 * i + 1] = _mm512_unpackhi_ps(a, b);
        }
        for i in 0..4 {
            let (a, b) = (_mm512_castps_pd(v[4 * i]), _mm512_castps_pd(v[4 * i + 1]));
            let (c, d) = (_mm512_castps_pd(v[4 * i + 2]), _mm512_castps_pd(v[4 * i + 3]));
            v[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
            v[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
            v[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
            v[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
        }
        for i in (0..4).chain(8..12) {
            let (a, b) = (v[i], v[i + 4]);
            v[i] = _mm512_shuffle_f32x4(a, b, 0x88);
            v[i + 4] = _mm512_shuffle_f32x4(a, b, 0xdd);
        }
        for i in 0..8 {
            let (a, b) = (v[i], v[i + 8]);
            v[i] = _mm512_shuffle_f32x4(a, b, 0x88);
            v[i + 8] = _mm512_shuffle_f32x4(a, b, 0xdd);
        }
        v
    }
}

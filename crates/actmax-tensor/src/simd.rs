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
}

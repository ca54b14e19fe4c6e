//! Element types of weight files and their little-endian decoding, shared by the
//! `.pth`, safetensors and ONNX readers: each reader maps its own type names onto
//! [`Dtype`], and every value becomes an f32 (weights) or an i64 (integer constants)
//! here, one way. Half floats go through the `half` crate.

/// An element type a weight file can store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE half.
    F16,
    /// bfloat16 (the high half of an f32).
    BF16,
    /// IEEE single.
    F32,
    /// IEEE double.
    F64,
    /// Signed 8-bit.
    I8,
    /// Unsigned 8-bit.
    U8,
    /// Signed 16-bit.
    I16,
    /// Signed 32-bit.
    I32,
    /// Signed 64-bit.
    I64,
    /// One byte, 0 or 1.
    Bool,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }

    /// True for the floating-point types.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
    }

    /// One element from exactly [`Dtype::size`] little-endian bytes, as f32.
    pub fn f32_at(self, b: &[u8]) -> f32 {
        match self {
            Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Dtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Dtype::F64 => f64::from_le_bytes(b8(b)) as f32,
            _ => self.i64_at(b) as f32,
        }
    }

    /// One element from exactly [`Dtype::size`] little-endian bytes, as i64 (floats
    /// truncated toward zero, saturating).
    pub fn i64_at(self, b: &[u8]) -> i64 {
        match self {
            Dtype::I8 => b[0] as i8 as i64,
            Dtype::U8 | Dtype::Bool => b[0] as i64,
            Dtype::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            Dtype::I64 => i64::from_le_bytes(b8(b)),
            Dtype::F64 => f64::from_le_bytes(b8(b)) as i64,
            _ => self.f32_at(b) as i64,
        }
    }

    /// Every element of `bytes` as f32; `None` when the length is not a whole number
    /// of elements.
    pub fn decode_f32(self, bytes: &[u8]) -> Option<Vec<f32>> {
        bytes
            .len()
            .is_multiple_of(self.size())
            .then(|| bytes.chunks_exact(self.size()).map(|b| self.f32_at(b)).collect())
    }

    /// Every element of `bytes` as i64; `None` as for [`Dtype::decode_f32`].
    pub fn decode_i64(self, bytes: &[u8]) -> Option<Vec<i64>> {
        bytes
            .len()
            .is_multiple_of(self.size())
            .then(|| bytes.chunks_exact(self.size()).map(|b| self.i64_at(b)).collect())
    }

    /// The type of a legacy torch storage class (`FloatStorage`, …).
    pub fn from_torch_storage(kind: &str) -> Option<Dtype> {
        Some(match kind {
            "FloatStorage" => Dtype::F32,
            "DoubleStorage" => Dtype::F64,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::BF16,
            "LongStorage" => Dtype::I64,
            "IntStorage" => Dtype::I32,
            "ShortStorage" => Dtype::I16,
            "CharStorage" => Dtype::I8,
            "ByteStorage" => Dtype::U8,
            "BoolStorage" => Dtype::Bool,
            _ => return None,
        })
    }

    /// The type of a safetensors dtype.
    pub fn from_safetensors(d: ::safetensors::Dtype) -> Option<Dtype> {
        use ::safetensors::Dtype as S;
        Some(match d {
            S::F16 => Dtype::F16,
            S::BF16 => Dtype::BF16,
            S::F32 => Dtype::F32,
            S::F64 => Dtype::F64,
            S::I8 => Dtype::I8,
            S::U8 => Dtype::U8,
            S::I16 => Dtype::I16,
            S::I32 => Dtype::I32,
            S::I64 => Dtype::I64,
            S::BOOL => Dtype::Bool,
            _ => return None,
        })
    }
}

fn b8(b: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&b[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::Dtype;

    #[test]
    fn every_type_decodes_its_little_endian_bytes() {
        // 1.5 in each float type, −2 in each signed integer type.
        assert_eq!(Dtype::F16.decode_f32(&0x3e00u16.to_le_bytes()).unwrap(), [1.5]);
        assert_eq!(Dtype::BF16.decode_f32(&0x3fc0u16.to_le_bytes()).unwrap(), [1.5]);
        assert_eq!(Dtype::F32.decode_f32(&1.5f32.to_le_bytes()).unwrap(), [1.5]);
        assert_eq!(Dtype::F64.decode_f32(&1.5f64.to_le_bytes()).unwrap(), [1.5]);
        assert_eq!(Dtype::I8.decode_i64(&[0xfe]).unwrap(), [-2]);
        assert_eq!(Dtype::I16.decode_i64(&(-2i16).to_le_bytes()).unwrap(), [-2]);
        assert_eq!(Dtype::I32.decode_i64(&(-2i32).to_le_bytes()).unwrap(), [-2]);
        assert_eq!(Dtype::I64.decode_f32(&(-2i64).to_le_bytes()).unwrap(), [-2.0]);
        assert_eq!(Dtype::U8.decode_i64(&[0xfe]).unwrap(), [254]);
        // Half's edges: the smallest subnormal, infinity.
        assert_eq!(Dtype::F16.f32_at(&1u16.to_le_bytes()), 2f32.powi(-24));
        assert_eq!(Dtype::F16.f32_at(&0x7c00u16.to_le_bytes()), f32::INFINITY);
        assert!(Dtype::F32.decode_f32(&[0; 6]).is_none());
        assert_eq!(Dtype::from_torch_storage("HalfStorage"), Some(Dtype::F16));
        assert_eq!(Dtype::from_torch_storage("ComplexFloatStorage"), None);
    }
}

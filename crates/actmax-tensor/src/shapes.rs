//! Shape rules, each written once: the tape's ops check their operands with these, and a
//! model checks its layers with the same functions before any tensor exists
//! (`Layer::output_shape` in actmax-layers adds only what a layer restricts further,
//! such as leaving the batch axis alone).

use crate::error::{param_err, shape_err, Result, TensorError};
use crate::geometry::checked_elems;

/// The numpy broadcast of two shapes.
pub fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() >= r { s[i + s.len() - r] } else { 1 };
    (0..r)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(TensorError::Broadcast { op, lhs: a.to_vec(), rhs: b.to_vec() }),
        })
        .collect()
}

/// `axis` names an axis of `shape`.
pub fn check_axis(op: &'static str, axis: usize, shape: &[usize]) -> Result<()> {
    if axis >= shape.len() {
        return Err(shape_err(op, format!("axis {axis} is out of range for rank {}", shape.len()), shape));
    }
    Ok(())
}

/// A sum or mean over distinct `axes`: the reduced axes become 1 (`keepdims`) or go.
pub fn reduce(op: &'static str, x: &[usize], axes: &[usize], keepdims: bool) -> Result<Vec<usize>> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != axes.len() {
        return Err(shape_err(op, format!("axes {axes:?} repeat an axis"), x));
    }
    for &a in &sorted {
        check_axis(op, a, x)?;
    }
    Ok(x.iter()
        .enumerate()
        .filter_map(|(a, &d)| match (sorted.contains(&a), keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect())
}

/// `(before, after)` padding of the trailing `pads.len()` axes.
pub fn pad(x: &[usize], pads: &[(usize, usize)]) -> Result<Vec<usize>> {
    if pads.len() > x.len() {
        return Err(shape_err("pad", format!("{} (before, after) pairs for a rank-{} tensor", pads.len(), x.len()), x));
    }
    let lead = x.len() - pads.len();
    let mut y = x.to_vec();
    for (d, &(b, a)) in y[lead..].iter_mut().zip(pads) {
        *d = d
            .checked_add(b)
            .and_then(|v| v.checked_add(a))
            .ok_or_else(|| shape_err("pad", "the padding is too large", x))?;
    }
    checked_elems("pad", &y)?;
    Ok(y)
}

/// `[start, end)` of each leading axis (`ranges` may cover fewer axes than the rank).
pub fn slice(x: &[usize], ranges: &[(usize, usize)]) -> Result<Vec<usize>> {
    if ranges.len() > x.len() {
        return Err(shape_err("slice", format!("{} ranges for a rank-{} tensor", ranges.len(), x.len()), x));
    }
    let mut y = x.to_vec();
    for (i, &(a, b)) in ranges.iter().enumerate() {
        if a > b || b > x[i] {
            return Err(shape_err("slice", format!("range {a}..{b} does not fit axis {i} of size {}", x[i]), x));
        }
        y[i] = b - a;
    }
    Ok(y)
}

/// The same elements in shape `to`.
pub fn reshape(x: &[usize], to: &[usize]) -> Result<Vec<usize>> {
    let have = checked_elems("reshape", x)?;
    if checked_elems("reshape", to)? != have {
        return Err(shape_err("reshape", format!("cannot reshape {have} elements into {to:?}"), x));
    }
    Ok(to.to_vec())
}

/// `[N, ...] → [N, prod(...)]`.
pub fn flatten(x: &[usize]) -> Result<Vec<usize>> {
    if x.is_empty() {
        return Err(shape_err("flatten", "needs at least one axis", x));
    }
    reshape(x, &[x[0], x[1..].iter().product()])
}

/// Tensors joined along `axis`; every other axis must agree.
pub fn concat(xs: &[&[usize]], axis: usize) -> Result<Vec<usize>> {
    let first = *xs.first().ok_or_else(|| param_err("concat", "needs at least one tensor"))?;
    check_axis("concat", axis, first)?;
    let mut y = first.to_vec();
    for s in &xs[1..] {
        if s.len() != first.len() || s.iter().zip(first).enumerate().any(|(i, (a, b))| i != axis && a != b) {
            return Err(shape_err("concat", format!("all shapes must match {first:?} except on axis {axis}"), s));
        }
        y[axis] += s[axis];
    }
    Ok(y)
}

/// Axes reordered: output axis `i` is input axis `perm[i]`.
pub fn permute(x: &[usize], perm: &[usize]) -> Result<Vec<usize>> {
    let mut seen = perm.to_vec();
    seen.sort_unstable();
    if !seen.iter().copied().eq(0..x.len()) {
        return Err(shape_err("permute", format!("{perm:?} is not a permutation of the {} axes", x.len()), x));
    }
    Ok(perm.iter().map(|&p| x[p]).collect())
}

/// A dense layer over the last axis, PyTorch's layout: `x [..., in]`, `w [out, in]`,
/// `bias [out]` → `[..., out]`.
pub fn linear(x: &[usize], w: &[usize], bias: Option<&[usize]>) -> Result<Vec<usize>> {
    let [out, inp] = w[..] else { return Err(shape_err("linear", "the weight must be [out, in]", w)) };
    if x.len() < 2 || x.last() != Some(&inp) {
        return Err(shape_err("linear", format!("expects [N, ..., {inp}] (flatten first?)"), x));
    }
    if bias.is_some_and(|b| b != [out]) {
        return Err(shape_err("linear", format!("bias must have shape [{out}]"), bias.unwrap_or_default()));
    }
    let mut y = x.to_vec();
    *y.last_mut().expect("rank >= 2") = out;
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_gives_the_shape_and_refuses_the_misfit() {
        assert_eq!(broadcast("add", &[2, 1, 4], &[3, 1]).unwrap(), [2, 3, 4]);
        assert!(broadcast("add", &[2, 3], &[4]).is_err());
        assert_eq!(reduce("sum", &[2, 3, 4], &[2, 1], true).unwrap(), [2, 1, 1]);
        assert_eq!(reduce("sum", &[2, 3, 4], &[1], false).unwrap(), [2, 4]);
        assert!(reduce("sum", &[2, 3], &[1, 1], false).is_err() && reduce("sum", &[2, 3], &[2], false).is_err());
        assert_eq!(pad(&[1, 3, 4, 5], &[(1, 2), (0, 3)]).unwrap(), [1, 3, 7, 8]);
        assert!(pad(&[4], &[(0, 0), (1, 1)]).is_err() && pad(&[4], &[(usize::MAX, 1)]).is_err());
        assert_eq!(slice(&[4, 5], &[(1, 3)]).unwrap(), [2, 5]);
        assert!(slice(&[4, 5], &[(3, 5)]).is_err() && slice(&[4], &[(0, 1), (0, 1)]).is_err());
        assert_eq!(reshape(&[2, 6], &[3, 4]).unwrap(), [3, 4]);
        assert!(reshape(&[2, 6], &[5]).is_err() && reshape(&[2], &[usize::MAX, 4]).is_err());
        assert_eq!(flatten(&[2, 3, 4]).unwrap(), [2, 12]);
        assert!(flatten(&[]).is_err());
        assert_eq!(concat(&[&[1, 2, 3], &[1, 5, 3]], 1).unwrap(), [1, 7, 3]);
        assert!(concat(&[&[1, 2], &[2, 2]], 1).is_err() && concat(&[], 0).is_err() && concat(&[&[1]], 1).is_err());
        assert_eq!(permute(&[1, 2, 3], &[0, 2, 1]).unwrap(), [1, 3, 2]);
        assert!(permute(&[1, 2, 3], &[0, 1, 1]).is_err() && permute(&[1, 2], &[0]).is_err());
        assert_eq!(linear(&[2, 7, 5], &[3, 5], Some(&[3])).unwrap(), [2, 7, 3]);
        assert!(linear(&[2, 4], &[3, 5], None).is_err() && linear(&[2, 5], &[3, 5], Some(&[5])).is_err());
        assert!(linear(&[2, 5], &[5], None).is_err());
    }
}

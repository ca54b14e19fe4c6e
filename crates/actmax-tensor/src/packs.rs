//! Packed conv weights a tape keeps from one iteration to the next.
//!
//! A visualization runs the same convs with the same constant weights hundreds of times;
//! packing them for the GEMM ([`ConvPack`]) once per run instead of once per call saves
//! a pass over every weight, forward and backward. The cache is owned by one tape (no
//! global state) and keyed by the weight's `Arc`: it holds a clone of that `Arc`, so
//! while an entry lives its tensor can be neither freed (its address reused) nor changed
//! in place (`Arc::make_mut` copies a shared tensor). Entries whose weight nobody else
//! holds any more are dropped at the next insertion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::conv::{ConvKernel, ConvPack, ConvPlan, PackDirection};
use crate::geometry::ConvGeometry;
use crate::op::Var;
use crate::tape::Tape;
use crate::tensor::Tensor;

type Key = (usize, usize, PackDirection, ConvKernel);
/// The weight an entry was packed from (kept alive and unchanged by holding it), and
/// its pack.
type Entry = (Arc<Tensor>, Arc<ConvPack>);

/// Packs of constant conv weights, by weight identity, group count and direction.
#[derive(Default)]
pub(crate) struct PackCache {
    map: Mutex<HashMap<Key, Entry>>,
}

impl std::fmt::Debug for PackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackCache({} packs)", self.len())
    }
}

impl PackCache {
    /// The pack of `w` for `g` and `dir`, made on first use.
    pub(crate) fn get(&self, w: &Arc<Tensor>, g: &ConvGeometry, dir: PackDirection) -> crate::Result<Arc<ConvPack>> {
        let plan = ConvPlan::choose(g);
        // The kernel is part of the key: one weight on another input size may pick another.
        let key = (Arc::as_ptr(w) as usize, g.p.groups, dir, plan.kernel);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, pack)) = map.get(&key) {
            return Ok(pack.clone());
        }
        map.retain(|_, (t, _)| Arc::strong_count(t) > 1);
        let pack = Arc::new(ConvPack::new(plan, w.as_slice().expect("tape values are in standard layout"), g, dir)?);
        map.insert(key, (w.clone(), pack.clone()));
        Ok(pack)
    }

    /// The pack of the weight `w` of a tape (a leaf): from the cache when `w` is a
    /// constant, made for this call when it is trained (it changes every step).
    pub(crate) fn for_weight(
        &self,
        tape: &Tape,
        w: Var,
        g: &ConvGeometry,
        dir: PackDirection,
    ) -> crate::Result<Arc<ConvPack>> {
        let value = &tape.nodes[w.index].value;
        if tape.requires_grad(w) {
            Ok(Arc::new(ConvPack::new(ConvPlan::choose(g), value.as_slice().expect("standard"), g, dir)?))
        } else {
            self.get(value, g, dir)
        }
    }

    /// Number of packs held.
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drops every pack.
    pub(crate) fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

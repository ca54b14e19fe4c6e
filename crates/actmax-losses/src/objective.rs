//! A small algebra over losses, like lucid's `Objective`: sums, differences, scalar
//! multiples and negation, each with a generated name.

use std::fmt;
use std::ops::{Add, Mul, Neg, Sub};
use std::sync::Arc;

use actmax_tensor::{Tape, Var};

use crate::{Loss, LossContext, Result};

type BuildFn = dyn Fn(&mut Tape, &LossContext<'_>) -> Result<Var> + Send + Sync;

/// A named, composable loss.
#[derive(Clone)]
pub struct Objective {
    name: String,
    layers: Vec<String>,
    build: Arc<BuildFn>,
}

impl fmt::Debug for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Objective({})", self.name)
    }
}

impl Objective {
    /// An objective from a name, the layers it reads and a build function.
    pub fn new(
        name: impl Into<String>,
        layers: Vec<String>,
        build: impl Fn(&mut Tape, &LossContext<'_>) -> Result<Var> + Send + Sync + 'static,
    ) -> Self {
        Self { name: name.into(), layers, build: Arc::new(build) }
    }

    /// Any loss as an objective.
    pub fn from_loss(loss: impl Loss + 'static) -> Self {
        let loss = Arc::new(loss);
        let l = loss.clone();
        Self::new(loss.name(), loss.layers(), move |tape, ctx| l.build(tape, ctx))
    }

    fn combine(self, other: Objective, op: &str, f: fn(&mut Tape, Var, Var) -> Result<Var>) -> Objective {
        let name = format!("{} {op} {}", self.name, other.name);
        let mut layers = self.layers.clone();
        layers.extend(other.layers.iter().cloned());
        layers.sort();
        layers.dedup();
        let (a, b) = (self.build, other.build);
        Objective::new(name, layers, move |tape, ctx| {
            let (x, y) = (a(tape, ctx)?, b(tape, ctx)?);
            f(tape, x, y)
        })
    }
}

impl Loss for Objective {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn layers(&self) -> Vec<String> {
        self.layers.clone()
    }
    fn build(&self, tape: &mut Tape, ctx: &LossContext<'_>) -> Result<Var> {
        (self.build)(tape, ctx)
    }
}

impl Add for Objective {
    type Output = Objective;
    fn add(self, rhs: Objective) -> Objective {
        self.combine(rhs, "+", |t, a, b| Ok(t.add(a, b)?))
    }
}

impl Sub for Objective {
    type Output = Objective;
    fn sub(self, rhs: Objective) -> Objective {
        self.combine(rhs, "-", |t, a, b| Ok(t.sub(a, b)?))
    }
}

impl Mul<Objective> for f32 {
    type Output = Objective;
    fn mul(self, rhs: Objective) -> Objective {
        let k = self;
        let build = rhs.build;
        Objective::new(format!("{k}*{}", rhs.name), rhs.layers, move |tape, ctx| {
            let v = build(tape, ctx)?;
            Ok(tape.mul_scalar(v, k)?)
        })
    }
}

impl Mul<f32> for Objective {
    type Output = Objective;
    fn mul(self, k: f32) -> Objective {
        k * self
    }
}

impl Neg for Objective {
    type Output = Objective;
    fn neg(self) -> Objective {
        let build = self.build;
        Objective::new(format!("-({})", self.name), self.layers, move |tape, ctx| {
            let v = build(tape, ctx)?;
            Ok(tape.neg(v)?)
        })
    }
}

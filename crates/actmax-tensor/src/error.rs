//! Typed errors of the tensor core.

use thiserror::Error;

/// Everything an op can refuse. Each variant names the op and the shapes involved, so a
/// caller can tell what to fix without a debugger.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TensorError {
    /// Two operands whose shapes neither match nor broadcast (numpy rules).
    #[error("{op}: shapes {lhs:?} and {rhs:?} do not broadcast (numpy rules: trailing dims must be equal or 1)")]
    Broadcast {
        /// The op that was asked.
        op: &'static str,
        /// Left operand shape.
        lhs: Vec<usize>,
        /// Right operand shape.
        rhs: Vec<usize>,
    },
    /// An operand has the wrong shape or rank for the op.
    #[error("{op}: {msg} (got shape {shape:?})")]
    Shape {
        /// The op that was asked.
        op: &'static str,
        /// What was expected.
        msg: String,
        /// The offending shape.
        shape: Vec<usize>,
    },
    /// A parameter (stride, padding, axis, kernel size, ...) that cannot work.
    #[error("{op}: {msg}")]
    Param {
        /// The op that was asked.
        op: &'static str,
        /// What is wrong and what would work.
        msg: String,
    },
    /// A `Var` that does not belong to this tape, or was made before its last `reset`.
    #[error("unknown variable #{0}: it belongs to another tape, or to this one before its last reset")]
    UnknownVar(usize),
    /// A `Var` whose value was released early ([`crate::Tape::release`]).
    #[error("variable #{0}: its value was released after its last reader ran (an inference pass frees what nobody reads again); ask for it as an output to keep it")]
    Released(usize),
    /// `backward` asked from a non-scalar value.
    #[error("backward: the loss must hold exactly one element, got shape {0:?}; reduce it with sum or mean first")]
    NonScalarLoss(Vec<usize>),
}

/// Result alias of the tensor core.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;

pub(crate) fn shape_err(op: &'static str, msg: impl Into<String>, shape: &[usize]) -> TensorError {
    TensorError::Shape { op, msg: msg.into(), shape: shape.to_vec() }
}

pub(crate) fn param_err(op: &'static str, msg: impl Into<String>) -> TensorError {
    TensorError::Param { op, msg: msg.into() }
}

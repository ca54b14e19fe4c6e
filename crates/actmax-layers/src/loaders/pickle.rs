//! A restricted unpickler: exactly what a PyTorch state dict needs, nothing executed.
//!
//! It understands the opcodes `torch.save` emits (protocols 2–4) and builds plain values.
//! `REDUCE` is honoured only for the few callables a state dict uses
//! (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter`); any other global is an error naming it. Every
//! length and index is checked against the bytes at hand.

use crate::error::{format_err, LoadError};

const FORMAT: &str = "pickle";

/// A pickled value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int that fits 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A global reference `module.name`.
    Global(String, String),
    /// A persistent id (torch storages).
    Persistent(Box<Value>),
    /// A tensor view on a storage.
    Tensor(TensorRef),
}

/// A tensor as `torch.save` describes it: a strided view on a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage's persistent id fields: (storage type name, key, element count).
    pub storage: StorageRef,
    /// Offset in elements.
    pub offset: usize,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

/// A storage reference from a persistent id.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// e.g. `FloatStorage`.
    pub kind: String,
    /// The key its bytes are filed under.
    pub key: String,
    /// Number of elements (legacy format; the zip format gives it too).
    pub numel: usize,
}

/// Reads one pickle from the start of `data`; returns the value and the bytes used.
pub fn load(data: &[u8]) -> Result<(Value, usize), LoadError> {
    let mut m = Machine { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: Vec::new() };
    let v = m.run()?;
    Ok((v, m.pos))
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Vec<Option<Value>>,
}

fn err(msg: impl Into<String>) -> LoadError {
    format_err(FORMAT, msg)
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LoadError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| err(format!("truncated at byte {}", self.pos)))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, LoadError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, LoadError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Result<usize, LoadError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Result<usize, LoadError> {
        let b = self.take(8)?;
        usize::try_from(u64::from_le_bytes(b.try_into().expect("8 bytes"))).map_err(|_| err("length does not fit"))
    }
    fn line(&mut self) -> Result<String, LoadError> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&c| c == b'\n').ok_or_else(|| err("unterminated text line"))?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| err("text line is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn text(&mut self, n: usize) -> Result<String, LoadError> {
        let b = self.take(n)?.to_vec();
        String::from_utf8(b).map_err(|_| err("string is not UTF-8"))
    }
    fn pop(&mut self) -> Result<Value, LoadError> {
        self.stack.pop().ok_or_else(|| err(format!("stack underflow at byte {}", self.pos)))
    }
    fn top(&mut self) -> Result<&mut Value, LoadError> {
        let at = self.pos;
        self.stack.last_mut().ok_or_else(|| err(format!("stack underflow at byte {at}")))
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, LoadError> {
        let m = self.marks.pop().ok_or_else(|| err("MARK missing"))?;
        if m > self.stack.len() {
            return Err(err("MARK beyond the stack"));
        }
        Ok(self.stack.split_off(m))
    }
    fn memo_put(&mut self, i: usize) -> Result<(), LoadError> {
        // A memo index larger than anything the file could have written is hostile.
        if i > self.data.len() {
            return Err(err(format!("memo index {i} is implausible")));
        }
        let v = self.stack.last().cloned().ok_or_else(|| err("memo of an empty stack"))?;
        if self.memo.len() <= i {
            self.memo.resize(i + 1, None);
        }
        self.memo[i] = Some(v);
        Ok(())
    }
    fn memo_get(&mut self, i: usize) -> Result<(), LoadError> {
        let v = self.memo.get(i).cloned().flatten().ok_or_else(|| err(format!("memo {i} read before written")))?;
        self.stack.push(v);
        Ok(())
    }

    fn run(&mut self) -> Result<Value, LoadError> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME: only a length hint
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(err("TUPLE of a short stack"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let b = self.take(4)?;
                    self.stack.push(Value::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        // Wider than 64 bits (torch.save's magic number): kept as bytes.
                        self.stack.push(Value::Bytes(b.to_vec()));
                        continue;
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.stack.push(Value::Float(f64::from_be_bytes(b.try_into().expect("8 bytes"))));
                }
                b'X' => {
                    let n = self.u32()?;
                    let s = self.text(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.text(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8d => {
                    let n = self.u64()?;
                    let s = self.text(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'T' => {
                    let n = self.u32()?;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err(err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'q' => {
                    let i = self.u8()? as usize;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len();
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as usize;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(Value::Persistent(Box::new(pid)));
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = reduce(f, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    // NEWOBJ cls args: only OrderedDict-like classes make sense here.
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = reduce(cls, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: state set on an object; a state dict's `_metadata` is dropped.
                    self.pop()?;
                    self.top()?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return Err(err("SETITEM on a non-dict")),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(err("SETITEMS with an odd item count"));
                    }
                    let mut it = items.into_iter();
                    let d = match self.top()? {
                        Value::Dict(d) => d,
                        _ => return Err(err("SETITEMS on a non-dict")),
                    };
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return Err(err("APPEND on a non-list")),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err(err("APPENDS on a non-list")),
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                other => {
                    return Err(err(format!(
                        "opcode 0x{other:02x} at byte {} is not allowed in a state dict",
                        self.pos - 1
                    )))
                }
            }
        }
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize, LoadError> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => Err(err(format!("{what} must be a non-negative int, got {v:?}"))),
    }
}

fn usize_tuple(v: &Value, what: &str) -> Result<Vec<usize>, LoadError> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(|i| as_usize(i, what)).collect(),
        _ => Err(err(format!("{what} must be a tuple"))),
    }
}

/// The callables a state dict may call, evaluated without running any code.
fn reduce(f: Value, args: Value) -> Result<Value, LoadError> {
    let Value::Global(module, name) = &f else { return Err(err(format!("REDUCE of a non-global {f:?}"))) };
    let Value::Tuple(args) = args else { return Err(err("REDUCE arguments must be a tuple")) };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err(err("_rebuild_tensor needs (storage, offset, size, stride)"));
            }
            let storage = match &args[0] {
                Value::Persistent(pid) => storage_ref(pid)?,
                other => return Err(err(format!("tensor storage must be a persistent id, got {other:?}"))),
            };
            let shape = usize_tuple(&args[2], "tensor size")?;
            let stride = usize_tuple(&args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return Err(err("tensor size and stride differ in rank"));
            }
            Ok(Value::Tensor(TensorRef { storage, offset: as_usize(&args[1], "storage offset")?, shape, stride }))
        }
        ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err(err("_rebuild_parameter needs a tensor")),
        },
        _ => Err(LoadError::Unsupported {
            format: FORMAT,
            msg: format!("the file calls `{module}.{name}`; actmax reads plain state dicts of tensors only (save `model.state_dict()`)"),
        }),
    }
}

/// `('storage', torch.FloatStorage, key, location, numel[, view])`.
fn storage_ref(pid: &Value) -> Result<StorageRef, LoadError> {
    let Value::Tuple(items) = pid else { return Err(err("persistent id must be a tuple")) };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(_, kind), Value::Str(key), _location, numel, ..] if tag == "storage" => {
            Ok(StorageRef { kind: kind.clone(), key: key.clone(), numel: as_usize(numel, "storage size")? })
        }
        _ => Err(err(format!("unrecognised persistent id {pid:?}"))),
    }
}

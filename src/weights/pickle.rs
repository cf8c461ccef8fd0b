//! A restricted unpickler: just enough of pickle protocols 2-5 to read a PyTorch state dict.
//!
//! Nothing in the input is ever executed. Globals resolve only against an allow-list, and REDUCE
//! only "calls" the few constructors a state dict needs, interpreted here as data. Any other
//! opcode or global is an error that names it, with its byte offset.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Element types a torch storage can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    pub fn from_storage_name(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    pub fn storage_name(self) -> &'static str {
        match self {
            Self::F64 => "DoubleStorage",
            Self::F32 => "FloatStorage",
            Self::F16 => "HalfStorage",
            Self::BF16 => "BFloat16Storage",
            Self::I64 => "LongStorage",
            Self::I32 => "IntStorage",
            Self::I16 => "ShortStorage",
            Self::I8 => "CharStorage",
            Self::U8 => "ByteStorage",
            Self::Bool => "BoolStorage",
        }
    }

    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// The globals a state dict may name. Everything else is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StorageDtype),
}

/// A persistent id `('storage', <Type>Storage, key, location, numel[, view_metadata])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    pub dtype: StorageDtype,
    pub key: String,
    pub location: String,
    pub numel: usize,
    /// Pre-1.0 storage views: (root key, element offset into the root, element count).
    pub view: Option<(String, usize, usize)>,
}

/// A tensor described by `_rebuild_tensor_v2`: still a reference into a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

pub type DictRc = Rc<RefCell<Vec<(Value, Value)>>>;
pub type ListRc = Rc<RefCell<Vec<Value>>>;

#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Rc<Vec<Value>>),
    // Lists and dicts are shared through the memo and mutated after being memoised, hence Rc.
    List(ListRc),
    Dict(DictRc),
    Global(Global),
    Storage(StorageRef),
    Tensor(Box<TensorRef>),
}

// Dropping nested containers recursively could overflow the stack on a crafted file (lists can be
// nested arbitrarily deep through the memo), so children are dropped from an explicit worklist.
impl Drop for Value {
    fn drop(&mut self) {
        let mut pending = Vec::new();
        take_children(self, &mut pending);
        while let Some(mut v) = pending.pop() {
            take_children(&mut v, &mut pending);
        }
    }
}

fn take_children(v: &mut Value, out: &mut Vec<Value>) {
    match v {
        Value::Tuple(t) => {
            if let Some(t) = Rc::get_mut(t) {
                out.append(t);
            }
        }
        Value::List(l) => {
            if let Some(l) = Rc::get_mut(l) {
                out.append(l.get_mut());
            }
        }
        Value::Dict(d) => {
            if let Some(d) = Rc::get_mut(d) {
                for (k, v) in d.get_mut().drain(..) {
                    out.push(k);
                    out.push(v);
                }
            }
        }
        _ => {}
    }
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// Error with the byte offset (within the pickle stream) where it was detected.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    pub offset: usize,
    pub msg: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at byte {})", self.msg, self.offset)
    }
}

type PResult<T> = std::result::Result<T, PickleError>;

// Deep nesting would make dropping a Value recurse deeply; a state dict needs only a few levels.
const MAX_DEPTH: usize = 64;

enum Item {
    Mark,
    Val(Value),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn err<T>(&self, at: usize, msg: impl Into<String>) -> PResult<T> {
        Err(PickleError {
            offset: self.base + at,
            msg: msg.into(),
        })
    }
    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = match self.pos.checked_add(n) {
            Some(e) if e <= self.data.len() => e,
            _ => {
                return self.err(
                    self.pos,
                    format!(
                        "truncated: needs {n} more bytes, {} left",
                        self.data.len().saturating_sub(self.pos)
                    ),
                )
            }
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn arr<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn line(&mut self) -> PResult<&'a str> {
        let start = self.pos;
        let rest = self.data.get(start..).unwrap_or(&[]);
        let Some(nl) = rest.iter().take(256).position(|&b| b == b'\n') else {
            if rest.len() < 256 {
                return self.err(start, "truncated: data ends inside a GLOBAL name");
            }
            return self.err(start, "GLOBAL name longer than 255 bytes");
        };
        self.pos = start + nl + 1;
        std::str::from_utf8(&rest[..nl]).or_else(|_| self.err(start, "GLOBAL name is not UTF-8"))
    }
    fn string(&mut self, n: usize) -> PResult<String> {
        let at = self.pos;
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.err(at, "string is not valid UTF-8"),
        }
    }
}

fn resolve_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        // v1 (torch 0.4) takes the same four leading arguments as v2.
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Some(Global::RebuildTensorV2),
        // Parameters saved with keep_vars=True; their python state is irrelevant here.
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            Some(Global::RebuildParameter)
        }
        // Legacy files normalise CUDA storages to `torch.*Storage`; accept the CUDA spelling too.
        ("torch" | "torch.cuda", s) => StorageDtype::from_storage_name(s).map(Global::Storage),
        _ => None,
    }
}

fn depth_of(v: &Value) -> usize {
    match v {
        Value::Tuple(t) => t.iter().map(depth_of).max().unwrap_or(0) + 1,
        Value::List(_) | Value::Dict(_) | Value::Tensor(_) => 1,
        _ => 0,
    }
}

/// Unpickles one object from the start of `data`. `base` is the stream's offset within the file,
/// used only in error messages. Returns the object and the number of bytes consumed.
pub fn unpickle(data: &[u8], base: usize) -> PResult<(Value, usize)> {
    let mut r = Reader { data, pos: 0, base };
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();

    // Pops the items above the topmost MARK (and the MARK itself).
    fn pop_mark(r: &Reader, stack: &mut Vec<Item>, at: usize) -> PResult<Vec<Value>> {
        let Some(m) = stack.iter().rposition(|i| matches!(i, Item::Mark)) else {
            return r.err(at, "MARK expected on the stack but not found");
        };
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Item::Val(v) => Some(v),
                Item::Mark => None,
            })
            .collect())
    }
    fn pop(r: &Reader, stack: &mut Vec<Item>, at: usize) -> PResult<Value> {
        match stack.pop() {
            Some(Item::Val(v)) => Ok(v),
            Some(Item::Mark) => r.err(at, "unexpected MARK on the stack"),
            None => r.err(at, "stack underflow"),
        }
    }
    fn push(r: &Reader, stack: &mut Vec<Item>, v: Value, at: usize) -> PResult<()> {
        let d = depth_of(&v);
        if d > MAX_DEPTH {
            return r.err(at, format!("objects nested deeper than {MAX_DEPTH} levels"));
        }
        stack.push(Item::Val(v));
        Ok(())
    }
    fn top(r: &Reader, stack: &[Item], at: usize) -> PResult<Value> {
        match stack.last() {
            Some(Item::Val(v)) => Ok(v.clone()),
            Some(Item::Mark) => r.err(at, "MARK on top of the stack where an object is needed"),
            None => r.err(at, "stack underflow"),
        }
    }
    fn set_items(r: &Reader, target: &Value, items: Vec<Value>, at: usize) -> PResult<()> {
        let Value::Dict(d) = target else {
            return r.err(at, format!("SETITEM(S) on a {}", target.kind()));
        };
        if items.len() % 2 != 0 {
            return r.err(at, "SETITEMS with an odd number of items");
        }
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if depth_of(&v) > MAX_DEPTH {
                return r.err(at, "objects nested too deeply");
            }
            d.push((k, v));
        }
        Ok(())
    }
    fn append(r: &Reader, target: &Value, items: Vec<Value>, at: usize) -> PResult<()> {
        let Value::List(l) = target else {
            return r.err(at, format!("APPEND(S) on a {}", target.kind()));
        };
        if items.iter().any(|v| depth_of(v) > MAX_DEPTH) {
            return r.err(at, "objects nested too deeply");
        }
        l.borrow_mut().extend(items);
        Ok(())
    }

    loop {
        let at = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                // PROTO
                let p = r.u8()?;
                if !(2..=5).contains(&p) {
                    return r.err(at, format!("unsupported pickle protocol {p}"));
                }
            }
            0x95 => {
                // FRAME: just a length hint.
                r.take(8)?;
            }
            b'.' => {
                // STOP
                let v = pop(&r, &mut stack, at)?;
                return Ok((v, r.pos));
            }
            b'}' => push(&r, &mut stack, Value::Dict(Rc::default()), at)?,
            b']' => push(&r, &mut stack, Value::List(Rc::default()), at)?,
            b')' => push(&r, &mut stack, Value::Tuple(Rc::new(Vec::new())), at)?,
            b'(' => stack.push(Item::Mark),
            b'N' => push(&r, &mut stack, Value::None, at)?,
            0x88 => push(&r, &mut stack, Value::Bool(true), at)?,
            0x89 => push(&r, &mut stack, Value::Bool(false), at)?,
            b'J' => {
                let v = i32::from_le_bytes(r.arr()?);
                push(&r, &mut stack, Value::Int(v as i64), at)?
            }
            b'K' => {
                let v = r.u8()?;
                push(&r, &mut stack, Value::Int(v as i64), at)?
            }
            b'M' => {
                let v = u16::from_le_bytes(r.arr()?);
                push(&r, &mut stack, Value::Int(v as i64), at)?
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                // Values beyond i64 only occur as the legacy magic number, checked separately.
                let v = match long_from_le(b).map(i64::try_from) {
                    Some(Ok(v)) => v,
                    Some(Err(_)) => i64::MIN,
                    None => return r.err(at, "LONG1 value longer than 16 bytes"),
                };
                push(&r, &mut stack, Value::Int(v), at)?
            }
            b'G' => {
                let v = f64::from_be_bytes(r.arr()?);
                push(&r, &mut stack, Value::Float(v), at)?
            }
            b'X' => {
                let n = u32::from_le_bytes(r.arr()?) as usize;
                let s = r.string(n)?;
                push(&r, &mut stack, Value::Str(s), at)?
            }
            0x8c => {
                let n = r.u8()? as usize;
                let s = r.string(n)?;
                push(&r, &mut stack, Value::Str(s), at)?
            }
            0x8d => {
                let n = u64::from_le_bytes(r.arr()?);
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                let s = r.string(n)?;
                push(&r, &mut stack, Value::Str(s), at)?
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&r, &mut stack, at)?);
                }
                items.reverse();
                push(&r, &mut stack, Value::Tuple(Rc::new(items)), at)?
            }
            b't' => {
                let items = pop_mark(&r, &mut stack, at)?;
                push(&r, &mut stack, Value::Tuple(Rc::new(items)), at)?
            }
            b'q' => {
                let k = r.u8()? as u32;
                memo.insert(k, top(&r, &stack, at)?);
            }
            b'r' => {
                let k = u32::from_le_bytes(r.arr()?);
                memo.insert(k, top(&r, &stack, at)?);
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, top(&r, &stack, at)?);
            }
            b'h' | b'j' => {
                let k = if op == b'h' {
                    r.u8()? as u32
                } else {
                    u32::from_le_bytes(r.arr()?)
                };
                let Some(v) = memo.get(&k).cloned() else {
                    return r.err(at, format!("memo key {k} not found"));
                };
                // Already depth-checked when first pushed.
                stack.push(Item::Val(v));
            }
            b'c' => {
                let module = r.line()?.to_owned();
                let name = r.line()?.to_owned();
                match resolve_global(&module, &name) {
                    Some(g) => push(&r, &mut stack, Value::Global(g), at)?,
                    None => {
                        return r.err(
                            at,
                            format!(
                            "refusing global `{module}.{name}`: not on the state-dict allow-list"
                        ),
                        )
                    }
                }
            }
            0x93 => {
                // STACK_GLOBAL
                let name = pop(&r, &mut stack, at)?;
                let module = pop(&r, &mut stack, at)?;
                let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                    return r.err(at, "STACK_GLOBAL needs two strings");
                };
                let (module, name) = (module.clone(), name.clone());
                match resolve_global(&module, &name) {
                    Some(g) => push(&r, &mut stack, Value::Global(g), at)?,
                    None => {
                        return r.err(
                            at,
                            format!(
                            "refusing global `{module}.{name}`: not on the state-dict allow-list"
                        ),
                        )
                    }
                }
            }
            b'Q' => {
                let pid = pop(&r, &mut stack, at)?;
                let s = storage_from_pid(&pid).map_err(|m| PickleError {
                    offset: base + at,
                    msg: m,
                })?;
                push(&r, &mut stack, Value::Storage(s), at)?
            }
            b'R' => {
                let args = pop(&r, &mut stack, at)?;
                let func = pop(&r, &mut stack, at)?;
                let v = reduce(func, args).map_err(|m| PickleError {
                    offset: base + at,
                    msg: m,
                })?;
                push(&r, &mut stack, v, at)?
            }
            b'b' => {
                // BUILD: the state of an OrderedDict is its `_metadata` attribute, of a tensor its
                // python attributes; inference needs neither.
                let _state = pop(&r, &mut stack, at)?;
                let obj = top(&r, &stack, at)?;
                if !matches!(obj, Value::Dict(_) | Value::Tensor(_)) {
                    return r.err(at, format!("BUILD on a {}", obj.kind()));
                }
            }
            b's' => {
                let v = pop(&r, &mut stack, at)?;
                let k = pop(&r, &mut stack, at)?;
                let d = top(&r, &stack, at)?;
                set_items(&r, &d, vec![k, v], at)?;
            }
            b'u' => {
                let items = pop_mark(&r, &mut stack, at)?;
                let d = top(&r, &stack, at)?;
                set_items(&r, &d, items, at)?;
            }
            b'a' => {
                let v = pop(&r, &mut stack, at)?;
                let l = top(&r, &stack, at)?;
                append(&r, &l, vec![v], at)?;
            }
            b'e' => {
                let items = pop_mark(&r, &mut stack, at)?;
                let l = top(&r, &stack, at)?;
                append(&r, &l, items, at)?;
            }
            other => {
                return r.err(
                    at,
                    format!(
                        "unsupported or forbidden pickle opcode {} (0x{other:02x})",
                        opcode_name(other)
                    ),
                )
            }
        }
    }
}

fn long_from_le(b: &[u8]) -> Option<i128> {
    if b.is_empty() {
        return Some(0);
    }
    if b.len() > 16 {
        return None;
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    let mut buf = if neg { [0xffu8; 16] } else { [0u8; 16] };
    buf[..b.len()].copy_from_slice(b);
    Some(i128::from_le_bytes(buf))
}

/// The full LONG1 value, for checking the legacy magic number (which does not fit i64).
pub fn read_long1(data: &[u8]) -> Option<i128> {
    // PROTO 2, LONG1 n <bytes>, STOP
    let rest = data.strip_prefix(&[0x80, 0x02, 0x8a])?;
    let n = *rest.first()? as usize;
    long_from_le(rest.get(1..1 + n)?)
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'P' => "PERSID",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'U' => "SHORT_BINSTRING",
        b'T' => "BINSTRING",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8e => "BINBYTES8",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        0x8b => "LONG4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x82..=0x84 => "EXT",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'p' => "PUT",
        b'g' => "GET",
        b'l' => "LIST",
        b'd' => "DICT",
        _ => "<unknown>",
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} is negative ({i})")),
        other => Err(format!("{what} should be an int, got {}", other.kind())),
    }
}

fn as_usize_tuple(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(t) => t.iter().map(|x| as_usize(x, what)).collect(),
        Value::List(l) => l.borrow().iter().map(|x| as_usize(x, what)).collect(),
        other => Err(format!("{what} should be a tuple, got {}", other.kind())),
    }
}

fn storage_from_pid(pid: &Value) -> Result<StorageRef, String> {
    let Value::Tuple(t) = pid else {
        return Err(format!(
            "persistent id should be a tuple, got {}",
            pid.kind()
        ));
    };
    match t.first() {
        Some(Value::Str(s)) if s == "storage" => {}
        _ => return Err("persistent id is not a ('storage', ...) tuple".into()),
    }
    if t.len() != 5 && t.len() != 6 {
        return Err(format!(
            "storage persistent id has {} fields, expected 5 or 6",
            t.len()
        ));
    }
    let dtype = match &t[1] {
        Value::Global(Global::Storage(d)) => *d,
        other => {
            return Err(format!(
                "storage type should be a torch.*Storage, got {}",
                other.kind()
            ))
        }
    };
    let (Value::Str(key), Value::Str(location)) = (&t[2], &t[3]) else {
        return Err("storage key and location should be strings".into());
    };
    let numel = as_usize(&t[4], "storage numel")?;
    let view = match t.get(5) {
        None | Some(Value::None) => None,
        Some(Value::Tuple(v)) if v.len() == 3 => {
            let Value::Str(vk) = &v[0] else {
                return Err("storage view key should be a string".into());
            };
            Some((
                vk.clone(),
                as_usize(&v[1], "view offset")?,
                as_usize(&v[2], "view size")?,
            ))
        }
        Some(other) => {
            return Err(format!(
                "unexpected storage view metadata: {}",
                other.kind()
            ))
        }
    };
    Ok(StorageRef {
        dtype,
        key: key.clone(),
        location: location.clone(),
        numel,
        view,
    })
}

fn reduce(func: Value, args: Value) -> Result<Value, String> {
    let Value::Tuple(args) = &args else {
        return Err(format!(
            "REDUCE arguments should be a tuple, got {}",
            args.kind()
        ));
    };
    let Value::Global(g) = &func else {
        return Err(format!(
            "REDUCE on a {}, not a callable global",
            func.kind()
        ));
    };
    match *g {
        Global::OrderedDict => {
            if !args.is_empty() {
                return Err("OrderedDict(...) with arguments is not supported".into());
            }
            Ok(Value::Dict(Rc::default()))
        }
        Global::RebuildTensorV2 => {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            if args.len() < 4 {
                return Err(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
            }
            let Value::Storage(storage) = &args[0] else {
                return Err(format!(
                    "_rebuild_tensor_v2: first argument is a {}, not a storage",
                    args[0].kind()
                ));
            };
            let offset = as_usize(&args[1], "storage offset")?;
            let size = as_usize_tuple(&args[2], "tensor size")?;
            let stride = as_usize_tuple(&args[3], "tensor stride")?;
            if size.len() != stride.len() {
                return Err(format!(
                    "tensor size {size:?} and stride {stride:?} differ in rank"
                ));
            }
            Ok(Value::Tensor(Box::new(TensorRef {
                storage: storage.clone(),
                offset,
                size,
                stride,
            })))
        }
        Global::RebuildParameter => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Global::Storage(d) => Err(format!(
            "calling torch.{} is not supported",
            d.storage_name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_basic_containers() {
        // {'a': (1, -2, 300), 'b': [True, None]} with memo and protocol 2 opcodes.
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        p.extend([0x8c, 1, b'a', b'K', 1, b'J']);
        p.extend((-2i32).to_le_bytes());
        p.extend([
            b'M', 44, 1, 0x87, 0x8c, 1, b'b', b']', b'(', 0x88, b'N', b'e', b'u', b'.',
        ]);
        let (v, n) = unpickle(&p, 0).unwrap();
        assert_eq!(n, p.len());
        let Value::Dict(d) = &v else { panic!() };
        let d = d.borrow();
        assert_eq!(d.len(), 2);
        let Value::Tuple(t) = &d[0].1 else { panic!() };
        assert!(matches!(
            t[..],
            [Value::Int(1), Value::Int(-2), Value::Int(300)]
        ));
        let Value::List(l) = &d[1].1 else { panic!() };
        assert!(matches!(l.borrow()[..], [Value::Bool(true), Value::None]));
    }

    #[test]
    fn refuses_unknown_globals_and_opcodes() {
        let e = unpickle(b"\x80\x02cbuiltins\neval\n)R.", 10).unwrap_err();
        assert!(e.msg.contains("builtins.eval"), "{e}");
        assert_eq!(e.offset, 12);
        let e = unpickle(b"\x80\x02(i__main__\nX\n.", 0).unwrap_err();
        assert!(e.msg.contains("INST"), "{e}");
        let e = unpickle(b"\x80\x02\x8c\x08builtins\x8c\x04exec\x93.", 0).unwrap_err();
        assert!(e.msg.contains("builtins.exec"), "{e}");
    }

    #[test]
    fn rejects_malformed_streams_without_panicking() {
        for bad in [
            &b""[..],
            b"\x80",
            b"\x80\x09.",
            b"X\xff\xff\xff\xff",
            b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
            b"h\x05.",
            b"u.",
            b"(.",
            b"K\x01K\x02s.",
            b"\x85.",
        ] {
            assert!(unpickle(bad, 0).is_err(), "{bad:?}");
        }
        // Deep nesting is refused rather than risking a stack overflow on drop.
        let mut deep = vec![b')'];
        deep.extend(std::iter::repeat_n(0x85, 10_000));
        deep.push(b'.');
        let e = unpickle(&deep, 0).unwrap_err();
        assert!(e.msg.contains("nested"), "{e}");
    }

    #[test]
    fn deep_and_cyclic_structures_drop_without_recursion() {
        // l0 = []; then l_{i+1} = [] appended to l_i through the memo: a 200k-deep chain.
        let mut p = vec![0x80, 2, b']', b'r', 0, 0, 0, 0];
        for i in 0u32..200_000 {
            p.push(b'j');
            p.extend(i.to_le_bytes());
            p.extend([b']', b'r']);
            p.extend((i + 1).to_le_bytes());
            p.push(b'a');
        }
        p.extend([b'j', 0, 0, 0, 0, b'.']);
        // A small stack: recursive drop of the chain would overflow it.
        let h = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let (v, _) = unpickle(&p, 0).unwrap();
                let Value::List(l) = &v else { panic!() };
                assert_eq!(l.borrow().len(), 1);
                drop(v);
                // A list containing itself must not hang or overflow either.
                let (v, _) = unpickle(b"\x80\x02]q\x00h\x00a.", 0).unwrap();
                assert_eq!(v.kind(), "list");
            })
            .unwrap();
        h.join().unwrap();
    }

    #[test]
    fn long1_and_magic() {
        let magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
        assert_eq!(read_long1(magic), Some(0x1950a86a20f9469cfc6c));
        assert_eq!(long_from_le(&[0xff]), Some(-1));
        assert_eq!(long_from_le(&[0x00, 0x80]), Some(-32768));
    }
}

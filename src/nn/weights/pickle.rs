//! Reading PyTorch's `torch.save` formats without Python: the legacy (pre-zip) one and the zip
//! format of torch >= 1.6 (a `data.pkl` state dict and one raw entry per storage).
//! In the legacy format the file is a
//! sequence of pickles (magic number, protocol, system info, the state dict whose tensors point
//! at storages by key, the list of storage keys) followed by each storage: a little-endian u64
//! element count and the raw little-endian data. Only the opcodes state dicts use are
//! interpreted; nothing is ever executed, and every size is checked before it is allocated.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{RawTensor, WeightsError, read_weights};

/// A pickled value (only what state dicts use; some payloads are parsed but never read).
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<V>),
    Tuple(Vec<V>),
    Dict(Vec<(V, V)>),
    Global(String, String),
    Call(Box<V>, Box<V>),
    PersId(Box<V>),
    Mark,
}

impl V {
    fn as_str(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            _ => None,
        }
    }
    fn as_int(&self) -> Option<i64> {
        match self {
            V::Int(i) => Some(*i),
            _ => None,
        }
    }
    fn items(&self) -> Option<&[V]> {
        match self {
            V::Tuple(v) | V::List(v) => Some(v),
            _ => None,
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        if self.pos.checked_add(n).is_none_or(|end| end > self.b.len()) {
            return Err(PickleError::Truncated {
                needed: n,
                offset: self.pos,
            });
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, PickleError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as usize)
    }
    fn u32(&mut self) -> Result<usize, PickleError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()) as usize)
    }
    fn line(&mut self) -> Result<String, PickleError> {
        let start = self.pos;
        while self.u8()? != b'\n' {}
        Ok(String::from_utf8_lossy(&self.b[start..self.pos - 1]).into_owned())
    }

    /// One pickle, up to its STOP.
    fn pickle(&mut self) -> Result<V, PickleError> {
        let mut m = Machine::default();
        loop {
            let op = self.u8()?;
            if op == b'.' {
                return m.pop().map(|i| i.v);
            }
            if !(m.literal(self, op)?
                || m.container(op)?
                || m.memo(self, op)?
                || m.object(self, op)?)
            {
                return Err(PickleError::Opcode {
                    op,
                    offset: self.pos - 1,
                });
            }
        }
    }

    fn string(&mut self, n: usize) -> Result<V, PickleError> {
        Ok(V::Str(String::from_utf8_lossy(self.take(n)?).into_owned()))
    }
}

/// A value on the machine's stack with its nesting depth and node count, so that hostile files
/// (deep nesting, memo references that copy large values again and again) are refused before
/// they exhaust the stack or memory.
#[derive(Clone)]
struct Item {
    v: V,
    depth: usize,
    nodes: usize,
}

impl Item {
    fn leaf(v: V) -> Item {
        Item {
            v,
            depth: 0,
            nodes: 1,
        }
    }

    /// A value built of `parts`.
    fn of(v: V, parts: &[&Item]) -> Item {
        Item {
            v,
            depth: 1 + parts.iter().map(|p| p.depth).max().unwrap_or(0),
            nodes: 1 + parts.iter().map(|p| p.nodes).sum::<usize>(),
        }
    }
}

/// Deeper nesting than a state dict ever has.
const MAX_DEPTH: usize = 256;
/// More values than a state dict of even the largest models holds (EfficientNet-B7: ~10^4).
const MAX_NODES: usize = 1 << 22;

/// The pickle machine's stack and memo.
#[derive(Default)]
struct Machine {
    stack: Vec<Item>,
    memo: HashMap<usize, Item>,
    nodes: usize,
}

impl Machine {
    fn push(&mut self, item: Item) -> Result<(), PickleError> {
        self.nodes = self.nodes.saturating_add(item.nodes);
        if item.depth > MAX_DEPTH {
            return Err(PickleError::TooDeep);
        }
        if self.nodes > MAX_NODES {
            return Err(PickleError::TooLarge);
        }
        self.stack.push(item);
        Ok(())
    }

    fn pop(&mut self) -> Result<Item, PickleError> {
        self.stack.pop().ok_or(PickleError::Underflow)
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>, PickleError> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v.v, V::Mark))
            .ok_or(PickleError::NoMark)?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    /// Adds `parts` to the container on top of the stack (a dict takes key-value pairs).
    fn extend_top(&mut self, parts: Vec<Item>) -> Result<(), PickleError> {
        let Some(top) = self.stack.last_mut() else {
            return Err(PickleError::Underflow);
        };
        for p in &parts {
            top.depth = top.depth.max(p.depth + 1);
            top.nodes += p.nodes;
        }
        if top.depth > MAX_DEPTH {
            return Err(PickleError::TooDeep);
        }
        match &mut top.v {
            V::Dict(d) => {
                let mut it = parts.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k.v, v.v));
                }
            }
            V::List(l) => l.extend(parts.into_iter().map(|p| p.v)),
            _ => {}
        }
        Ok(())
    }

    /// Constants, numbers, strings and bytes; `false` when `op` is not one of them.
    fn literal(&mut self, r: &mut Reader, op: u8) -> Result<bool, PickleError> {
        let v = match op {
            0x80 => {
                r.u8()?;
                return Ok(true);
            }
            0x95 => {
                r.take(8)?;
                return Ok(true);
            }
            b'(' => V::Mark,
            b'N' => V::None,
            0x88 => V::Bool(true),
            0x89 => V::Bool(false),
            b'J' => V::Int(i32::from_le_bytes(r.take(4)?.try_into().unwrap()) as i64),
            b'K' => V::Int(r.u8()? as i64),
            b'M' => V::Int(r.u16()? as i64),
            0x8a => {
                let n = r.u8()? as usize;
                let bytes = r.take(n)?;
                let mut v: i128 = 0;
                for (i, b) in bytes.iter().enumerate().take(16) {
                    v |= (*b as i128) << (8 * i);
                }
                if n > 0 && n < 16 && bytes[n - 1] & 0x80 != 0 {
                    v -= 1i128 << (8 * n);
                }
                V::Int(v as i64)
            }
            b'G' => V::Float(f64::from_be_bytes(r.take(8)?.try_into().unwrap())),
            b'X' | b'T' => {
                let n = r.u32()?;
                r.string(n)?
            }
            0x8c | b'U' => {
                let n = r.u8()? as usize;
                r.string(n)?
            }
            b'B' => {
                let n = r.u32()?;
                V::Bytes(r.take(n)?.to_vec())
            }
            b'C' => {
                let n = r.u8()? as usize;
                V::Bytes(r.take(n)?.to_vec())
            }
            _ => return Ok(false),
        };
        self.push(Item::leaf(v))?;
        Ok(true)
    }

    /// Dicts, lists and tuples; `false` when `op` is not one of them.
    fn container(&mut self, op: u8) -> Result<bool, PickleError> {
        match op {
            b'}' => self.push(Item::of(V::Dict(Vec::new()), &[]))?,
            b']' => self.push(Item::of(V::List(Vec::new()), &[]))?,
            b')' => self.push(Item::of(V::Tuple(Vec::new()), &[]))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push(tuple(items))?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    return Err(PickleError::Underflow);
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(tuple(items))?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.extend_top(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.extend_top(items)?;
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_top(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_top(items)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Memo puts and gets; `false` when `op` is not one of them.
    fn memo(&mut self, r: &mut Reader, op: u8) -> Result<bool, PickleError> {
        let put = match op {
            b'q' => Some(r.u8()? as usize),
            b'r' => Some(r.u32()?),
            0x94 => Some(self.memo.len()),
            _ => None,
        };
        if let Some(i) = put {
            let top = self.stack.last().cloned().unwrap_or(Item::leaf(V::None));
            self.memo.insert(i, top);
            return Ok(true);
        }
        let get = match op {
            b'h' => r.u8()? as usize,
            b'j' => r.u32()?,
            _ => return Ok(false),
        };
        let v = self.memo.get(&get).cloned().ok_or(PickleError::NoMemo)?;
        self.push(v)?;
        Ok(true)
    }

    /// Globals, calls, object state and persistent ids; `false` when `op` is not one of them.
    fn object(&mut self, r: &mut Reader, op: u8) -> Result<bool, PickleError> {
        match op {
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                self.push(Item::leaf(V::Global(module, name)))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                self.push(Item::leaf(V::Global(
                    module.v.as_str().unwrap_or_default().into(),
                    name.v.as_str().unwrap_or_default().into(),
                )))?;
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let f = self.pop()?;
                // An OrderedDict() is filled by SETITEMS afterwards: make it a dict now.
                let item = match &f.v {
                    V::Global(m, n) if m == "collections" && n == "OrderedDict" => {
                        Item::of(V::Dict(Vec::new()), &[])
                    }
                    _ => {
                        let meta = Item::of(V::None, &[&f, &args]);
                        Item {
                            v: V::Call(Box::new(f.v), Box::new(args.v)),
                            ..meta
                        }
                    }
                };
                self.push(item)?;
            }
            b'b' => {
                self.pop()?; // state set on an object: not needed
            }
            b'Q' => {
                let pid = self.pop()?;
                let meta = Item::of(V::None, &[&pid]);
                self.push(Item {
                    v: V::PersId(Box::new(pid.v)),
                    ..meta
                })?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn tuple(items: Vec<Item>) -> Item {
    let meta = Item::of(V::None, &items.iter().collect::<Vec<_>>());
    Item {
        v: V::Tuple(items.into_iter().map(|i| i.v).collect()),
        ..meta
    }
}

/// A tensor of the state dict: where its data lies in which storage.

/// What is wrong inside a torch file (said after the file's name).
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The file ends early.
    #[error("is truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Where.
        offset: usize,
    },
    /// A storage's size overflows.
    #[error("is truncated")]
    Overflow,
    /// A pickle opcode torch never writes.
    #[error("uses pickle opcode 0x{op:02x} at offset {offset}, which a legacy torch file does not")]
    Opcode {
        /// The opcode.
        op: u8,
        /// Where.
        offset: usize,
    },
    /// Nesting past the reader's limit.
    #[error("has a malformed pickle (nested deeper than {MAX_DEPTH})")]
    TooDeep,
    /// More values than the reader's limit.
    #[error("has a malformed pickle (more than {MAX_NODES} values)")]
    TooLarge,
    /// An opcode takes more values than the stack holds.
    #[error("has a malformed pickle (stack underflow)")]
    Underflow,
    /// A memo lookup of a value never stored.
    #[error("has a malformed pickle (memo)")]
    NoMemo,
    /// An opcode needs a mark there is none of.
    #[error("has a malformed pickle (no mark)")]
    NoMark,
    /// A tensor's entry is not what torch writes.
    #[error("tensor `{name}` {problem}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A zip-format file lacks an entry.
    #[error("has no entry `{0}`")]
    NoEntry(String),
    /// A zip entry larger than the file could hold.
    #[error("entry `{name}` declares {size} bytes, more than the file could hold")]
    EntryTooLarge {
        /// The entry.
        name: String,
        /// Its declared size.
        size: u64,
    },
    /// A zip entry that cannot be read.
    #[error("entry `{name}` cannot be read ({reason})")]
    EntryUnreadable {
        /// The entry.
        name: String,
        /// What the zip reader said.
        reason: String,
    },
    /// The pickle is not a dict.
    #[error("does not hold a state dict")]
    NoStateDict,
    /// A state dict with a key that is not a string.
    #[error("has a state dict key that is not a string")]
    KeyNotString,
    /// Neither a state dict nor a checkpoint holding one.
    #[error(
        "holds no tensors: it is neither a state dict nor a training checkpoint with one under `{}`; save the model's `state_dict()` with `torch.save`",
        NESTED.join("`, `")
    )]
    NoTensors,
    /// A tensor whose storage has no data.
    #[error("has no data for storage `{key}` of tensor `{name}`")]
    NoStorage {
        /// The storage.
        key: String,
        /// The tensor.
        name: String,
    },
    /// A problem inside one storage.
    #[error("{problem} (storage `{key}`{})", elements.map(|n| format!(" of {n} elements")).unwrap_or_default())]
    InStorage {
        /// The storage.
        key: String,
        /// Its element count, once read.
        elements: Option<u64>,
        /// The problem.
        problem: Box<PickleError>,
    },
}

impl PickleError {
    fn tensor(name: &str, problem: &'static str) -> PickleError {
        PickleError::Tensor {
            name: name.to_string(),
            problem,
        }
    }

    fn in_storage(self, key: &str, elements: Option<u64>) -> PickleError {
        PickleError::InStorage {
            key: key.to_string(),
            elements,
            problem: Box::new(self),
        }
    }
}

struct TensorRef {
    name: String,
    key: String,
    ty: String,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

/// Bytes per element of a torch storage type.
fn element_size(ty: &str) -> usize {
    match ty {
        "FloatStorage" | "IntStorage" => 4,
        "LongStorage" | "DoubleStorage" => 8,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        _ => 1,
    }
}

/// Whether a storage type holds floating-point weights (read as f32).
fn is_float(ty: &str) -> bool {
    matches!(
        ty,
        "FloatStorage" | "HalfStorage" | "BFloat16Storage" | "DoubleStorage"
    )
}

/// The tensor a state-dict entry rebuilds (`None` for entries that are not tensors).
fn tensor_ref(name: &str, v: &V) -> Result<Option<TensorRef>, PickleError> {
    let V::Call(f, args) = v else { return Ok(None) };
    if !matches!(&**f, V::Global(_, n) if n == "_rebuild_tensor_v2" || n == "_rebuild_tensor") {
        return Ok(None);
    }
    let args = match args.items() {
        Some(a) if a.len() >= 4 => a,
        _ => return Err(PickleError::tensor(name, "is malformed")),
    };
    let V::PersId(pid) = &args[0] else {
        return Err(PickleError::tensor(name, "has no storage"));
    };
    let pid = match pid.items() {
        Some(p) if p.len() >= 3 => p,
        _ => return Err(PickleError::tensor(name, "has a malformed storage id")),
    };
    let ty = match &pid[1] {
        V::Global(_, n) => n.clone(),
        _ => String::new(),
    };
    let ints = |v: &V| -> Result<Vec<usize>, PickleError> {
        v.items()
            .unwrap_or(&[])
            .iter()
            .map(|x| match x.as_int() {
                Some(i) if i >= 0 => Ok(i as usize),
                _ => Err(PickleError::tensor(name, "has a malformed shape or stride")),
            })
            .collect()
    };
    Ok(Some(TensorRef {
        name: name.to_string(),
        key: pid[2].as_str().unwrap_or_default().to_string(),
        ty,
        offset: args[1].as_int().unwrap_or(0).max(0) as usize,
        shape: ints(&args[2])?,
        strides: ints(&args[3])?,
    }))
}

/// The tensor's values in row-major order, gathered through its strides (torch may store
/// channels-last); every index is checked against the storage before anything is allocated.
fn gather(t: &TensorRef, data: &[u8]) -> Result<Vec<f32>, PickleError> {
    let outside = || PickleError::tensor(&t.name, "lies outside its storage");
    let size = element_size(&t.ty);
    let elements = data.len() / size;
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(outside)?;
    if t.strides.len() != t.shape.len() {
        return Err(PickleError::tensor(
            &t.name,
            "has a malformed shape or stride",
        ));
    }
    if numel > 0 {
        // The furthest element the strides reach must lie inside the storage.
        let last = t
            .shape
            .iter()
            .zip(&t.strides)
            .try_fold(t.offset, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
            })
            .ok_or_else(outside)?;
        if last >= elements {
            return Err(outside());
        }
    }
    let f32_at = |i: usize| {
        let b = &data[i * size..(i + 1) * size];
        match t.ty.as_str() {
            "HalfStorage" => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            "BFloat16Storage" => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            "DoubleStorage" => f64::from_le_bytes(b.try_into().unwrap()) as f32,
            _ => f32::from_le_bytes(b.try_into().unwrap()),
        }
    };
    let mut values = Vec::with_capacity(numel);
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let at = t.offset
            + index
                .iter()
                .zip(&t.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        values.push(f32_at(at));
        for d in (0..t.shape.len()).rev() {
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(values)
}

/// Reads every tensor of a zip-format `torch.save` state dict (torch >= 1.6): `<name>/data.pkl`
/// holds the state dict, whose tensors name their storages by key, and each storage is the raw
/// little-endian entry `<name>/data/<key>`. Entries are read with their declared sizes checked
/// against the file's, so a crafted archive cannot ask for more memory than it could hold.
fn read_zip(
    bytes: &[u8],
    fail: impl Fn(String) -> WeightsError,
    torch: impl Fn(PickleError) -> WeightsError,
) -> Result<BTreeMap<String, RawTensor>, WeightsError> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| fail(format!("is not a readable zip-format torch file ({e})")))?;
    let pkl = z
        .file_names()
        .find(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(str::to_string)
        .ok_or_else(|| fail("is a zip file without `data.pkl`: not a `torch.save` file".into()))?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    // torch stores entries uncompressed; a deflated one may grow, but not past this.
    let limit = (bytes.len() as u64).saturating_mul(64);
    let mut entry = |name: &str| -> Result<Vec<u8>, PickleError> {
        let f = z
            .by_name(name)
            .map_err(|_| PickleError::NoEntry(name.to_string()))?;
        if f.size() > limit {
            return Err(PickleError::EntryTooLarge {
                name: name.to_string(),
                size: f.size(),
            });
        }
        let mut v = Vec::with_capacity(f.size() as usize);
        f.take(limit)
            .read_to_end(&mut v)
            .map_err(|e| PickleError::EntryUnreadable {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        Ok(v)
    };
    let pickle = entry(&pkl).map_err(&torch)?;
    let mut r = Reader { b: &pickle, pos: 0 };
    let tensors = state_dict(r.pickle().map_err(&torch)?).map_err(&torch)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for t in tensors.iter().filter(|t| is_float(&t.ty)) {
        if !storages.contains_key(&t.key) {
            let data = entry(&format!("{prefix}data/{}", t.key)).map_err(&torch)?;
            storages.insert(t.key.clone(), data);
        }
    }
    let storages = storages
        .iter()
        .map(|(k, v)| (k.clone(), v.as_slice()))
        .collect();
    weights_of(tensors, &storages).map_err(torch)
}

/// The tensors a state dict (a pickled dict of name -> rebuilt tensor) points at.
/// Where training checkpoints keep the model's state dict, in the order tried (timm's and
/// torchvision's training scripts, and common hand-written ones); the EMA copies last.
const NESTED: [&str; 6] = [
    "state_dict",
    "model",
    "model_state_dict",
    "net",
    "state_dict_ema",
    "model_ema",
];

/// The tensors of a state dict, or of the state dict a training checkpoint nests under one of
/// [`NESTED`]; a `module.` prefix on every name (`DataParallel`) is dropped.
fn state_dict(dict: V) -> Result<Vec<TensorRef>, PickleError> {
    let V::Dict(entries) = dict else {
        return Err(PickleError::NoStateDict);
    };
    let mut tensors = Vec::new();
    for (k, v) in &entries {
        let name = k.as_str().ok_or(PickleError::KeyNotString)?;
        if let Some(t) = tensor_ref(name, v)? {
            tensors.push(t);
        }
    }
    if tensors.is_empty() {
        let mut entries = entries;
        for name in NESTED {
            if let Some(i) = entries.iter().position(|(k, _)| k.as_str() == Some(name)) {
                // A nested dict is read (its errors are the file's); anything else under
                // the name (an architecture string, say) is not a state dict.
                let inner = match entries.swap_remove(i).1 {
                    v @ V::Dict(_) => state_dict(v)?,
                    _ => Vec::new(),
                };
                if !inner.is_empty() {
                    tensors = inner;
                    break;
                }
            }
        }
    }
    if !tensors.is_empty() && tensors.iter().all(|t| t.name.starts_with("module.")) {
        for t in &mut tensors {
            t.name.drain(.."module.".len());
        }
    }
    Ok(tensors)
}

/// The float tensors' values from their storages (integer buffers such as
/// `num_batches_tracked` are not weights).
fn weights_of(
    tensors: Vec<TensorRef>,
    storages: &HashMap<String, &[u8]>,
) -> Result<BTreeMap<String, RawTensor>, PickleError> {
    if tensors.is_empty() {
        return Err(PickleError::NoTensors);
    }
    let mut out = BTreeMap::new();
    for t in tensors.into_iter().filter(|t| is_float(&t.ty)) {
        let data = storages.get(&t.key).ok_or_else(|| PickleError::NoStorage {
            key: t.key.clone(),
            name: t.name.clone(),
        })?;
        let values = gather(&t, data)?;
        out.insert(
            t.name,
            RawTensor {
                shape: t.shape,
                values,
            },
        );
    }
    Ok(out)
}

/// Reads every tensor of a `torch.save` state dict: the legacy format, or the zip format of
/// torch >= 1.6 (told apart by the file's first bytes).
pub fn read_legacy(path: &Path) -> Result<BTreeMap<String, RawTensor>, WeightsError> {
    let (bytes, fail) = read_weights(path)?;
    let torch = |problem: PickleError| WeightsError::Torch {
        path: path.to_path_buf(),
        problem,
    };
    // A legacy torch file is a pickle (protocol 2: 0x80 0x02) of torch's magic number.
    if !bytes.starts_with(b"PK") && !bytes.starts_with(&[0x80, 0x02]) {
        return Err(fail("is not a PyTorch weights file (it starts with neither a pickle nor a zip header); give the `.pth` file the model was saved to".into()));
    }
    if bytes.starts_with(b"PK") {
        return read_zip(&bytes, fail, torch);
    }
    let mut r = Reader { b: &bytes, pos: 0 };
    let magic = r.pickle().map_err(&torch)?;
    if !matches!(magic, V::Int(_)) {
        return Err(fail("is not a legacy torch file (no magic number)".into()));
    }
    r.pickle().map_err(&torch)?; // protocol version
    r.pickle().map_err(&torch)?; // system info
    let dict = r.pickle().map_err(&torch)?;
    let keys = r.pickle().map_err(&torch)?;
    let tensors = state_dict(dict).map_err(&torch)?;
    let sizes: HashMap<&str, usize> = tensors
        .iter()
        .map(|t| (t.key.as_str(), element_size(&t.ty)))
        .collect();
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for key in keys.items().unwrap_or(&[]).iter().filter_map(V::as_str) {
        let head = r.take(8).map_err(|p| torch(p.in_storage(key, None)))?;
        let numel = u64::from_le_bytes(head.try_into().unwrap());
        let size = sizes.get(key).copied().unwrap_or(4) as u64;
        let data = numel
            .checked_mul(size)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(PickleError::Overflow)
            .and_then(|n| r.take(n))
            .map_err(|p| torch(p.in_storage(key, Some(numel))))?;
        storages.insert(key.to_string(), data);
    }
    weights_of(tensors, &storages).map_err(torch)
}

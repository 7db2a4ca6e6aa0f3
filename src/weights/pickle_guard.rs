//! A dry run of a torch checkpoint's pickles before candle reads them.
//!
//! candle's pickle machine builds a tree of `Object`s that it clones, formats and drops
//! recursively, and copies memo entries whole on every get. A stranger's file can therefore abort
//! the process (a million nested lists overflow the stack when the tree is dropped), or exhaust
//! memory (a string length of 4 GiB allocated before it is read; memo entries doubled by each get).
//! Aborts cannot be caught, so this module replays the same opcodes first, keeping for every
//! stack item only its nesting depth and node count, and refuses a file that passes the limits
//! below before candle builds anything. Real checkpoints are far inside them (nesting below 20,
//! a few nodes per tensor).
//!
//! Only the opcodes candle understands are replayed, with candle's own meaning; anything else
//! (an unknown opcode, a stack underflow) stops the dry run and is left to candle to report.
//!
//! candle never calls what a pickle names, so nothing in a file can run; still, a checkpoint
//! has no reason to name anything but tensors, storages, containers and config data, and one
//! that names `os.system` is hostile or broken. Every GLOBAL is checked against an allow-list
//! ([`allowed_global`], modelled on torch's `weights_only` loader plus the omegaconf classes that
//! original GLIGEN checkpoints carry in `config_dict`) and anything else is refused by name.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Deepest nesting accepted (containers inside containers).
pub const MAX_DEPTH: u32 = 512;
/// Most objects the reader may create, memo copies included.
pub const MAX_NODES: u64 = 20_000_000;
/// Largest pickle stream read (the tensors' data is stored beside it, not in it).
pub const MAX_PICKLE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Mark,
    List,
    Dict,
    /// `collections.OrderedDict` / `defaultdict`, which candle's REDUCE turns into an empty dict.
    DictClass,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    kind: Kind,
    depth: u32,
    nodes: u64,
}

impl Item {
    fn leaf(kind: Kind) -> Self {
        Self {
            kind,
            depth: 1,
            nodes: 1,
        }
    }

    /// A new object holding `children`.
    fn parent_of(kind: Kind, children: &[Item]) -> Self {
        Self {
            kind,
            depth: 1 + children.iter().map(|c| c.depth).max().unwrap_or(0),
            nodes: 1 + children.iter().map(|c| c.nodes).sum::<u64>(),
        }
    }

    /// `self` after `children` were added to it in place (APPEND, SETITEM, a dict BUILD).
    fn grown_by(self, children: &[Item]) -> Self {
        Self {
            kind: self.kind,
            depth: children
                .iter()
                .map(|c| c.depth + 1)
                .fold(self.depth, u32::max),
            nodes: self.nodes + children.iter().map(|c| c.nodes).sum::<u64>(),
        }
    }
}

/// Why a pickle was refused, without the file's name (the caller adds it).
#[derive(Debug, thiserror::Error)]
pub enum PickleGuardError {
    #[error("{entry}: objects nested more than {MAX_DEPTH} deep (at byte {offset})")]
    TooDeep { entry: String, offset: usize },
    #[error("{entry}: more than {MAX_NODES} objects (at byte {offset})")]
    TooManyObjects { entry: String, offset: usize },
    #[error("{entry}: a string of {len} bytes at byte {offset}, past the end of the stream")]
    StringPastEnd {
        entry: String,
        offset: usize,
        len: u64,
    },
    #[error(
        "{entry}: the pickle names `{global}` (at byte {offset}); a checkpoint holds only tensors, \
         storages, containers and config data, so it is refused"
    )]
    ForbiddenGlobal {
        entry: String,
        offset: usize,
        global: String,
    },
    #[error("{entry}: the pickle stream is larger than {MAX_PICKLE_BYTES} bytes")]
    TooLarge { entry: String },
    #[error("not a readable zip archive: {0}")]
    Zip(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Dry-runs every `*data.pkl` entry of the torch zip checkpoint at `path`, as candle reads them.
pub fn check_checkpoint(path: &Path) -> Result<(), PickleGuardError> {
    check_checkpoint_reader(std::io::BufReader::new(std::fs::File::open(path)?))
}

/// [`check_checkpoint`] on a checkpoint's bytes from any reader.
pub fn check_checkpoint_reader(reader: impl Read + std::io::Seek) -> Result<(), PickleGuardError> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| PickleGuardError::Zip(e.to_string()))?;
    let names = zip
        .file_names()
        .map(|n| n.map(std::borrow::Cow::into_owned))
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| PickleGuardError::Zip(e.to_string()))?;
    for name in names.iter().filter(|n| n.ends_with("data.pkl")) {
        let entry = zip
            .by_name(name)
            .map_err(|e| PickleGuardError::Zip(e.to_string()))?;
        // The declared size is not trusted: the read itself is bounded.
        let mut bytes = Vec::new();
        entry.take(MAX_PICKLE_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_PICKLE_BYTES {
            return Err(PickleGuardError::TooLarge {
                entry: name.clone(),
            });
        }
        check_pickle(name, &bytes)?;
    }
    Ok(())
}

/// Dry-runs one pickle stream (see the module documentation). `entry` names it in errors.
pub fn check_pickle(entry: &str, data: &[u8]) -> Result<(), PickleGuardError> {
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u32, Item> = HashMap::new();
    let mut created: u64 = 0;
    let mut pos = 0usize;
    let too_deep = |offset| PickleGuardError::TooDeep {
        entry: entry.to_owned(),
        offset,
    };
    let too_many = |offset| PickleGuardError::TooManyObjects {
        entry: entry.to_owned(),
        offset,
    };
    while pos < data.len() {
        let offset = pos;
        let op = data[pos];
        pos += 1;
        // Reads `n` argument bytes; `None` (a truncated stream) ends the dry run.
        let mut arg = |n: usize| -> Option<&[u8]> {
            let bytes = data.get(pos..pos.checked_add(n)?)?;
            pos += n;
            Some(bytes)
        };
        let pushed: Option<Item> = match op {
            0x80 => {
                arg(1);
                None
            }
            b'c' => {
                let module = line(data, &mut pos);
                let class = line(data, &mut pos);
                let (Some(module), Some(class)) = (module, class) else {
                    return Ok(());
                };
                let (module, class) = (
                    String::from_utf8_lossy(module),
                    String::from_utf8_lossy(class),
                );
                if !allowed_global(&module, &class) {
                    return Err(PickleGuardError::ForbiddenGlobal {
                        entry: entry.to_owned(),
                        offset,
                        global: format!("{module}.{class}"),
                    });
                }
                let is_dict =
                    module == "collections" && (class == "OrderedDict" || class == "defaultdict");
                Some(Item::leaf(if is_dict {
                    Kind::DictClass
                } else {
                    Kind::Other
                }))
            }
            b'K' | b'M' | b'J' | b'G' => {
                let n = match op {
                    b'K' => 1,
                    b'M' => 2,
                    b'J' => 4,
                    _ => 8,
                };
                if arg(n).is_none() {
                    return Ok(());
                }
                Some(Item::leaf(Kind::Other))
            }
            0x8a => {
                let Some(&[n]) = arg(1) else { return Ok(()) };
                if arg(n as usize).is_none() {
                    return Ok(());
                }
                Some(Item::leaf(Kind::Other))
            }
            b'X' => {
                let Some(len) = arg(4) else { return Ok(()) };
                let len = u32::from_le_bytes(len.try_into().unwrap_or([0; 4])) as u64;
                if len > (data.len() - pos) as u64 {
                    return Err(PickleGuardError::StringPastEnd {
                        entry: entry.to_owned(),
                        offset,
                        len,
                    });
                }
                pos += len as usize;
                Some(Item::leaf(Kind::Other))
            }
            b'N' | 0x88 | 0x89 | b')' => Some(Item::leaf(Kind::Other)),
            b']' => Some(Item::leaf(Kind::List)),
            b'}' => Some(Item::leaf(Kind::Dict)),
            b'(' => Some(Item::leaf(Kind::Mark)),
            b'Q' => {
                let Some(id) = stack.pop() else { return Ok(()) };
                Some(Item::parent_of(Kind::Other, &[id]))
            }
            b't' => {
                let Some(children) = pop_to_mark(&mut stack) else {
                    return Ok(());
                };
                Some(Item::parent_of(Kind::Other, &children))
            }
            // candle reads DICT as EMPTY_DICT: nothing is popped.
            b'd' => Some(Item::leaf(Kind::Dict)),
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Ok(());
                }
                let children = stack.split_off(stack.len() - n);
                Some(Item::parent_of(Kind::Other, &children))
            }
            b'a' | b's' => {
                let n = if op == b'a' { 1 } else { 2 };
                if stack.len() < n + 1 {
                    return Ok(());
                }
                let children = stack.split_off(stack.len() - n);
                let target = stack.pop().unwrap_or(Item::leaf(Kind::Other));
                Some(target.grown_by(&children))
            }
            b'e' | b'u' => {
                let Some(children) = pop_to_mark(&mut stack) else {
                    return Ok(());
                };
                let Some(target) = stack.pop() else {
                    return Ok(());
                };
                Some(target.grown_by(&children))
            }
            b'b' => {
                let (Some(args), Some(obj)) = (stack.pop(), stack.pop()) else {
                    return Ok(());
                };
                if obj.kind == Kind::Dict && args.kind == Kind::Dict {
                    Some(obj.grown_by(&[args]))
                } else {
                    Some(Item::parent_of(Kind::Other, &[obj, args]))
                }
            }
            b'R' | 0x81 => {
                let (Some(args), Some(callable)) = (stack.pop(), stack.pop()) else {
                    return Ok(());
                };
                if op == b'R' && callable.kind == Kind::DictClass {
                    Some(Item::leaf(Kind::Dict))
                } else {
                    Some(Item::parent_of(Kind::Other, &[callable, args]))
                }
            }
            b'h' | b'j' => {
                let n = if op == b'h' { 1 } else { 4 };
                let Some(id) = arg(n) else { return Ok(()) };
                let id = id.iter().rev().fold(0u32, |acc, &b| (acc << 8) | b as u32);
                let Some(item) = memo.get(&id).copied() else {
                    return Ok(());
                };
                // candle clones the memo entry: all of its nodes are created again.
                created = created.saturating_add(item.nodes);
                Some(item)
            }
            b'q' | b'r' => {
                let n = if op == b'q' { 1 } else { 4 };
                let Some(id) = arg(n) else { return Ok(()) };
                let id = id.iter().rev().fold(0u32, |acc, &b| (acc << 8) | b as u32);
                let Some(&last) = stack.last() else {
                    return Ok(());
                };
                created = created.saturating_add(last.nodes);
                memo.insert(id, last);
                None
            }
            b'.' => return Ok(()),
            // An opcode candle does not know: candle reports it.
            _ => return Ok(()),
        };
        if let Some(item) = pushed {
            if item.depth > MAX_DEPTH {
                return Err(too_deep(offset));
            }
            created = created.saturating_add(1);
            stack.push(item);
        }
        if created > MAX_NODES {
            return Err(too_many(offset));
        }
    }
    Ok(())
}

/// Whether a checkpoint may name `module.name`: torch's tensor and storage rebuilders, dtypes and
/// sizes; plain containers and scalars (Python 3 and 2 spellings); numpy scalars and arrays as
/// torch's `weights_only` loader accepts them; the omegaconf config classes and `typing` markers.
pub fn allowed_global(module: &str, name: &str) -> bool {
    match module {
        "torch" => {
            name.ends_with("Storage")
                || matches!(
                    name,
                    "Size"
                        | "device"
                        | "float16"
                        | "float32"
                        | "float64"
                        | "bfloat16"
                        | "half"
                        | "float"
                        | "double"
                        | "int8"
                        | "int16"
                        | "int32"
                        | "int64"
                        | "uint8"
                        | "long"
                        | "int"
                        | "bool"
                )
        }
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
        ),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "collections" => matches!(name, "OrderedDict" | "defaultdict"),
        "builtins" | "__builtin__" => matches!(
            name,
            "dict"
                | "list"
                | "tuple"
                | "set"
                | "frozenset"
                | "int"
                | "long"
                | "float"
                | "complex"
                | "bool"
                | "str"
                | "unicode"
                | "bytes"
                | "bytearray"
                | "slice"
                | "object"
        ),
        "typing" => matches!(
            name,
            "Any" | "Dict" | "List" | "Optional" | "Tuple" | "Union"
        ),
        "omegaconf.base" | "omegaconf.dictconfig" | "omegaconf.listconfig" | "omegaconf.nodes" => {
            name.chars().next().is_some_and(char::is_uppercase)
        }
        "numpy" => matches!(name, "dtype" | "ndarray"),
        "numpy.core.multiarray" | "numpy._core.multiarray" => {
            matches!(name, "scalar" | "_reconstruct")
        }
        "numpy.dtypes" => name.ends_with("DType"),
        "_codecs" => name == "encode",
        _ => false,
    }
}

/// The bytes up to the next newline (GLOBAL's arguments), moving `pos` past it.
fn line<'a>(data: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = data.get(*pos..)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    *pos += end + 1;
    Some(&rest[..end])
}

/// The items above the topmost mark, removing them and the mark (candle's `pop_to_marker`).
fn pop_to_mark(stack: &mut Vec<Item>) -> Option<Vec<Item>> {
    let mark = stack.iter().rposition(|i| i.kind == Kind::Mark)?;
    let children = stack.split_off(mark + 1);
    stack.pop();
    Some(children)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_lists(n: usize) -> Vec<u8> {
        // [[[...]]]: n EMPTY_LISTs, then n-1 APPENDs folding each into the one below.
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', n));
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        p
    }

    #[test]
    fn a_million_nested_lists_are_refused() {
        let err = check_pickle("data.pkl", &nested_lists(1_000_000)).unwrap_err();
        assert!(
            err.to_string().contains("nested more than 512 deep"),
            "{err}"
        );
    }

    #[test]
    fn only_allowed_globals_pass() {
        let global = |module: &str, name: &str| {
            let mut p = vec![0x80, 2, b'c'];
            p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
            p.push(b'.');
            check_pickle("data.pkl", &p)
        };
        for (module, name) in [
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch", "HalfStorage"),
            ("collections", "OrderedDict"),
            ("__builtin__", "long"),
            ("omegaconf.dictconfig", "DictConfig"),
            ("typing", "Any"),
        ] {
            global(module, name).unwrap();
        }
        for (module, name) in [
            ("posix", "system"),
            ("os", "system"),
            ("builtins", "eval"),
            ("builtins", "getattr"),
            ("subprocess", "Popen"),
            ("torch", "load"),
            ("omegaconf.base", "_utils"),
        ] {
            let err = global(module, name).unwrap_err().to_string();
            assert!(err.contains(&format!("`{module}.{name}`")), "{err}");
        }
    }

    #[test]
    fn shallow_nesting_passes() {
        check_pickle("data.pkl", &nested_lists(100)).unwrap();
    }

    #[test]
    fn nested_tuples_through_marks_are_refused() {
        let mut p = vec![0x80, 2];
        p.extend([b'('; 1000]);
        p.extend([b't'; 1000]);
        p.push(b'.');
        assert!(matches!(
            check_pickle("data.pkl", &p),
            Err(PickleGuardError::TooDeep { .. })
        ));
    }

    #[test]
    fn memo_doubling_is_refused() {
        // x = (); repeat: x = (x, x) through the memo: 2^k nodes after k rounds.
        let mut p = vec![0x80, 2, b')', b'q', 0];
        for _ in 0..40 {
            p.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        p.push(b'.');
        let err = check_pickle("data.pkl", &p).unwrap_err();
        assert!(
            matches!(err, PickleGuardError::TooManyObjects { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_string_longer_than_the_stream_is_refused_before_allocating() {
        let mut p = vec![0x80, 2, b'X'];
        p.extend(u32::MAX.to_le_bytes());
        p.extend(b"abc.");
        let err = check_pickle("data.pkl", &p).unwrap_err();
        assert!(err.to_string().contains("4294967295 bytes"), "{err}");
    }
}

//! JSON → layout, one field at a time.
//!
//! serde's derived readers report "invalid type: string, expected f64" with
//! no hint of *which* of forty numbers is wrong. Reading each field from a
//! `serde_json::Value` ourselves lets every message start with its path
//! (`entities[2].box: ...`), which is what a user editing a file needs.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{Entity, Inpaint, Layout, LayoutError, Sampling, LAYOUT_VERSION};

type Object = Map<String, Value>;

/// Marks number literals that [`exact_json`] moved into strings.
const EXACT_NUMBER: &str = "\u{1}glichen-exact-number:";

/// Parses JSON with every number converted by the standard library, which
/// rounds correctly. serde_json's default float parser (without its
/// `float_roundtrip` feature) can be one unit in the last place off, so a
/// coordinate written by us would not always read back as the same f64;
/// the document promises that it does.
///
/// How: number literals are wrapped in marked strings before serde_json
/// sees the text, then converted back. If anything about that fails,
/// serde_json's own reading of the untouched text is returned, so error
/// messages keep their true line and column.
pub(crate) fn exact_json(text: &str) -> Result<Value, serde_json::Error> {
    let fallback = || serde_json::from_str::<Value>(text);
    let bytes = text.as_bytes();
    let mut marked = String::with_capacity(text.len() + text.len() / 4);
    let mut in_string = false;
    let mut escaped = false;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len()
                && matches!(bytes[i], b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            marked.push_str(&text[copied..start]);
            marked.push_str("\"\\u0001glichen-exact-number:");
            marked.push_str(&text[start..i]);
            marked.push('"');
            copied = i;
            continue;
        }
        i += 1;
    }
    marked.push_str(&text[copied..]);
    let Ok(mut value) = serde_json::from_str::<Value>(&marked) else {
        return fallback();
    };
    if restore_numbers(&mut value) {
        Ok(value)
    } else {
        fallback()
    }
}

/// Turns the marked strings of [`exact_json`] back into numbers; false if
/// one is not a valid JSON number.
fn restore_numbers(value: &mut Value) -> bool {
    match value {
        Value::Array(items) => items.iter_mut().all(restore_numbers),
        Value::Object(map) => map.values_mut().all(restore_numbers),
        Value::String(s) => {
            let Some(literal) = s.strip_prefix(EXACT_NUMBER) else {
                return true;
            };
            match number_from_literal(literal) {
                Some(n) => {
                    *value = Value::Number(n);
                    true
                }
                None => false,
            }
        }
        _ => true,
    }
}

/// A JSON number literal as serde_json would type it (unsigned, signed,
/// else float), but with correctly rounded floats.
fn number_from_literal(literal: &str) -> Option<serde_json::Number> {
    // JSON grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    let body = literal.strip_prefix('-').unwrap_or(literal);
    let int_len = body.bytes().take_while(u8::is_ascii_digit).count();
    if int_len == 0 || (int_len > 1 && body.starts_with('0')) {
        return None;
    }
    let mut rest = &body[int_len..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    if let Some(exp) = rest.strip_prefix(['e', 'E']) {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        let n = exp.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &exp[n..];
    }
    if !rest.is_empty() {
        return None;
    }
    let is_integer = !literal.contains(['.', 'e', 'E']);
    if is_integer {
        if let Ok(u) = literal.parse::<u64>() {
            return Some(u.into());
        }
        if let Ok(i) = literal.parse::<i64>() {
            return Some(i.into());
        }
    }
    // Out-of-range literals (1e999) become infinite: refuse, as serde_json does.
    serde_json::Number::from_f64(literal.parse::<f64>().ok()?)
}

/// A JSON type name for messages.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Deserialises `v` as `T`, prefixing any error with `path`.
pub(crate) fn convert<T: DeserializeOwned>(path: &str, v: &Value) -> Result<T, LayoutError> {
    T::deserialize(v).map_err(|e| LayoutError::field(path, e.to_string()))
}

/// An optional field; `null` counts as absent, which is how most JSON
/// producers (Python's `None`) spell "not set".
pub(crate) fn optional<T: DeserializeOwned>(
    obj: &Object,
    prefix: &str,
    key: &str,
) -> Result<Option<T>, LayoutError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => convert(&join(prefix, key), v).map(Some),
    }
}

pub(crate) fn required<T: DeserializeOwned>(
    obj: &Object,
    prefix: &str,
    key: &str,
) -> Result<T, LayoutError> {
    optional(obj, prefix, key)?
        .ok_or_else(|| LayoutError::field(join(prefix, key), "missing (this field is required)"))
}

pub(crate) fn object<'a>(path: &str, v: &'a Value) -> Result<&'a Object, LayoutError> {
    v.as_object().ok_or_else(|| {
        LayoutError::field(path, format!("expected an object, found {}", json_kind(v)))
    })
}

/// Largest layout file read. Pictures embedded as data URIs make real layouts megabytes long;
/// nothing legitimate comes near this.
pub const MAX_LAYOUT_BYTES: u64 = 256 * 1024 * 1024;
/// Most JSON values (objects, arrays, strings, numbers, keys) a layout may hold. A layout has at
/// most a few dozen entities of a few dozen values each; without this bound a 200 MB file of
/// millions of entities takes gigabytes as a `Value` tree before the slot limit is checked.
pub const MAX_LAYOUT_VALUES: usize = 1_000_000;

/// Refuses JSON with more than [`MAX_LAYOUT_VALUES`] values, counted in one pass over the bytes
/// before anything is allocated for them.
pub(crate) fn check_value_count(text: &str) -> Result<(), LayoutError> {
    let bytes = text.as_bytes();
    let (mut count, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                count += 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b't' | b'f' | b'n' => count += 1,
            b'-' | b'0'..=b'9' => {
                count += 1;
                while i + 1 < bytes.len()
                    && matches!(bytes[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
            }
            _ => {}
        }
        if count > MAX_LAYOUT_VALUES {
            return Err(LayoutError::field(
                "(document)",
                format!(
                    "more than {MAX_LAYOUT_VALUES} JSON values ({} bytes); a layout holds a few \
                     dozen entities",
                    text.len()
                ),
            ));
        }
        i += 1;
    }
    Ok(())
}

const TOP_LEVEL_FIELDS: &[&str] = &[
    "version",
    "width",
    "height",
    "prompt",
    "negative_prompt",
    "entities",
    "inpaint",
    "sampling",
];
const SAMPLING_FIELDS: &[&str] = &[
    "steps",
    "guidance_scale",
    "alpha0",
    "alpha_decay",
    "seed",
    "scheduler",
];
const INPAINT_FIELDS: &[&str] = &["image"];

/// The fields each entity type reads, `type` included.
fn entity_fields(ty: &str) -> &'static [&'static str] {
    match ty {
        "text_box" => &["type", "phrase", "box"],
        "image_box" => &["type", "image", "box", "phrase"],
        "style_image" => &["type", "image"],
        "keypoints" => &["type", "points"],
        "map" => &["type", "kind", "image"],
        _ => &[],
    }
}

/// Unknown fields are ignored, so that a file from a newer Glichen opens, but each is reported:
/// a typo such as `stpes` would otherwise silently fall back to the default.
fn warn_unknown_fields(obj: &Object, path: &str, known: &[&str]) {
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        let hint = known
            .iter()
            .find(|k| edit_distance(k, key) <= 2)
            .map(|k| format!(" (did you mean \"{k}\"?)"))
            .unwrap_or_default();
        tracing::warn!("layout: {}: unknown field, ignored{hint}", join(path, key));
    }
}

/// Levenshtein distance, for the "did you mean" of unknown fields (short keys only).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

pub(crate) fn layout_from_value(value: &Value) -> Result<Layout, LayoutError> {
    let obj = value.as_object().ok_or_else(|| {
        LayoutError::field(
            "(document)",
            format!("a layout is a JSON object, found {}", json_kind(value)),
        )
    })?;

    // The version goes first: a newer document may have changed what the
    // other fields mean, so nothing else is worth reading (or complaining
    // about) until we know we understand it.
    let version = match obj.get("version") {
        None | Some(Value::Null) => {
            return Err(LayoutError::field(
                "version",
                format!("missing; a layout document must say \"version\": {LAYOUT_VERSION}"),
            ))
        }
        Some(v) => v.as_u64().ok_or_else(|| {
            LayoutError::field("version", format!("expected a positive integer, found {v}"))
        })?,
    };
    if version > LAYOUT_VERSION {
        return Err(LayoutError::UnsupportedVersion {
            found: version,
            supported: LAYOUT_VERSION,
        });
    }
    if version == 0 {
        return Err(LayoutError::field(
            "version",
            format!("0 is not a layout version (expected {LAYOUT_VERSION})"),
        ));
    }

    warn_unknown_fields(obj, "", TOP_LEVEL_FIELDS);

    let width: u32 = required(obj, "", "width")?;
    let height: u32 = required(obj, "", "height")?;
    let prompt: String = optional(obj, "", "prompt")?.unwrap_or_default();
    let negative_prompt: String = optional(obj, "", "negative_prompt")?.unwrap_or_default();

    let entities = match obj.get("entities") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| entity_from_value(&format!("entities[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(LayoutError::field(
                "entities",
                format!("expected an array, found {}", json_kind(other)),
            ))
        }
    };

    let inpaint = match obj.get("inpaint") {
        None | Some(Value::Null) => None,
        Some(v) => Some(inpaint_from_value("inpaint", v)?),
    };
    let sampling = match obj.get("sampling") {
        None | Some(Value::Null) => Sampling::default(),
        Some(v) => sampling_from_value("sampling", v)?,
    };

    Ok(Layout {
        width,
        height,
        prompt,
        negative_prompt,
        entities,
        inpaint,
        sampling,
    })
}

pub(crate) fn entity_from_value(path: &str, v: &Value) -> Result<Entity, LayoutError> {
    let obj = v.as_object().ok_or_else(|| {
        LayoutError::field(
            path,
            format!("expected an object with a \"type\", found {}", json_kind(v)),
        )
    })?;
    let ty = match obj.get("type") {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => {
            return Err(LayoutError::field(
                path,
                "missing \"type\" (expected text_box, image_box, style_image, keypoints, map)",
            ))
        }
        Some(other) => {
            return Err(LayoutError::field(
                format!("{path}.type"),
                format!("expected a string, found {}", json_kind(other)),
            ))
        }
    };
    warn_unknown_fields(obj, path, entity_fields(ty));
    match ty {
        "text_box" => Ok(Entity::TextBox {
            phrase: required(obj, path, "phrase")?,
            bbox: required(obj, path, "box")?,
        }),
        "image_box" => Ok(Entity::ImageBox {
            image: required(obj, path, "image")?,
            bbox: required(obj, path, "box")?,
            phrase: optional(obj, path, "phrase")?,
        }),
        "style_image" => Ok(Entity::StyleImage {
            image: required(obj, path, "image")?,
        }),
        "map" => {
            let kind: String = required(obj, path, "kind")?;
            let kind = super::MapKind::parse(&kind).ok_or_else(|| {
                LayoutError::field(
                    join(path, "kind"),
                    format!(
                        "unknown map kind {kind:?} (expected hed, canny, depth, normal or sem)"
                    ),
                )
            })?;
            Ok(Entity::Map {
                kind,
                image: required(obj, path, "image")?,
            })
        }
        "keypoints" => {
            let points_path = join(path, "points");
            let items = match obj.get("points") {
                Some(Value::Array(items)) => items,
                None | Some(Value::Null) => {
                    return Err(LayoutError::field(
                        points_path,
                        "missing (this field is required)",
                    ))
                }
                Some(other) => {
                    return Err(LayoutError::field(
                        points_path,
                        format!("expected an array, found {}", json_kind(other)),
                    ))
                }
            };
            // Each point separately, so the message says which keypoint.
            let points = items
                .iter()
                .enumerate()
                .map(|(k, p)| match p {
                    Value::Null => Ok(None),
                    p => convert::<[f64; 2]>(&format!("{points_path}[{k}]"), p).map(Some),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Entity::Keypoints { points })
        }
        other => Err(LayoutError::UnknownEntityType {
            path: path.to_string(),
            found: other.to_string(),
        }),
    }
}

pub(crate) fn sampling_from_value(path: &str, v: &Value) -> Result<Sampling, LayoutError> {
    let obj = object(path, v)?;
    warn_unknown_fields(obj, path, SAMPLING_FIELDS);
    Ok(Sampling {
        steps: optional(obj, path, "steps")?,
        guidance_scale: optional(obj, path, "guidance_scale")?,
        alpha0: optional(obj, path, "alpha0")?,
        alpha_decay: optional(obj, path, "alpha_decay")?,
        seed: optional(obj, path, "seed")?,
        scheduler: optional(obj, path, "scheduler")?,
    })
}

pub(crate) fn inpaint_from_value(path: &str, v: &Value) -> Result<Inpaint, LayoutError> {
    let obj = object(path, v)?;
    warn_unknown_fields(obj, path, INPAINT_FIELDS);
    Ok(Inpaint {
        image: required(obj, path, "image")?,
    })
}

//! Typed reads of a JSON config's fields, each error naming the file and the field.

use super::DepthAnythingError;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Typed access to one JSON object's fields; errors name the file and `prefix` + field. Shared
/// with the image processor's config (`maps::depth`).
pub(crate) struct Fields<'a> {
    path: &'a Path,
    prefix: &'static str,
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(
        path: &'a Path,
        prefix: &'static str,
        json: &'a Value,
    ) -> Result<Self, DepthAnythingError> {
        match json.as_object() {
            Some(obj) => Ok(Self { path, prefix, obj }),
            None => Err(DepthAnythingError::Config {
                path: path.to_path_buf(),
                field: prefix.trim_end_matches('.').to_string(),
                message: "must be a JSON object".into(),
            }),
        }
    }

    fn path(&self) -> PathBuf {
        self.path.to_path_buf()
    }

    /// A field that is present and not null (null reads as "use the default", as transformers'
    /// dataclass defaults would not, but as the hub's files mean it).
    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    pub(crate) fn error(&self, name: &str, message: String) -> DepthAnythingError {
        DepthAnythingError::Config {
            path: self.path(),
            field: format!("{}{name}", self.prefix),
            message,
        }
    }

    pub(crate) fn invalid(&self, name: &str, rule: &str, got: &Value) -> DepthAnythingError {
        self.error(name, format!("{rule}, got {got}"))
    }

    pub(crate) fn unsupported(&self, name: &str, value: &str, reason: &str) -> DepthAnythingError {
        DepthAnythingError::Unsupported {
            path: self.path(),
            field: format!("{}{name}", self.prefix),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn usize(&self, name: &str, default: usize) -> Result<usize, DepthAnythingError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => as_usize(v).ok_or_else(|| self.invalid(name, "must be a whole number", v)),
        }
    }

    pub(crate) fn opt_i64(&self, name: &str) -> Result<Option<i64>, DepthAnythingError> {
        self.get(name)
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| self.invalid(name, "must be an integer", v))
            })
            .transpose()
    }

    pub(crate) fn i64(&self, name: &str, default: i64) -> Result<i64, DepthAnythingError> {
        Ok(self.opt_i64(name)?.unwrap_or(default))
    }

    pub(crate) fn f64(&self, name: &str, default: f64) -> Result<f64, DepthAnythingError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.invalid(name, "must be a finite number", v)),
        }
    }

    pub(crate) fn bool(&self, name: &str, default: bool) -> Result<bool, DepthAnythingError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.invalid(name, "must be true or false", v)),
        }
    }

    pub(crate) fn opt_str(&self, name: &str) -> Result<Option<String>, DepthAnythingError> {
        self.get(name)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.invalid(name, "must be a string", v))
            })
            .transpose()
    }

    /// An int, or a `[h, w]` pair with `h == w` (the position grid and the patches are square).
    pub(crate) fn square(&self, name: &str, default: usize) -> Result<usize, DepthAnythingError> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        if let Some(n) = as_usize(v) {
            return Ok(n);
        }
        match v.as_array().map(|a| a.iter().map(as_usize).collect::<Vec<_>>()) {
            Some(pair) if pair.len() == 2 && pair[0].is_some() && pair[0] == pair[1] => {
                Ok(pair[0].unwrap_or(default))
            }
            Some(pair) if pair.len() == 2 && pair.iter().all(Option::is_some) => Err(self
                .unsupported(
                    name,
                    &v.to_string(),
                    "only square sizes are supported (transformers reshapes the position embeddings to a square grid)",
                )),
            _ => Err(self.invalid(name, "must be a whole number or an [h, w] pair", v)),
        }
    }

    pub(crate) fn usize_list(
        &self,
        name: &str,
        default: &[usize],
    ) -> Result<Vec<usize>, DepthAnythingError> {
        let Some(v) = self.get(name) else {
            return Ok(default.to_vec());
        };
        v.as_array()
            .and_then(|a| a.iter().map(|x| as_usize(x).filter(|&n| n > 0)).collect())
            .ok_or_else(|| self.invalid(name, "must be a list of positive whole numbers", v))
    }

    pub(crate) fn f64_list(
        &self,
        name: &str,
        default: &[f64],
    ) -> Result<Vec<f64>, DepthAnythingError> {
        let Some(v) = self.get(name) else {
            return Ok(default.to_vec());
        };
        v.as_array()
            .and_then(|a| a.iter().map(Value::as_f64).collect())
            .ok_or_else(|| self.invalid(name, "must be a list of numbers", v))
    }
}

/// A JSON whole number (`4` or `4.0`) as usize.
fn as_usize(v: &Value) -> Option<usize> {
    if let Some(n) = v.as_u64() {
        return usize::try_from(n).ok();
    }
    let x = v.as_f64()?;
    (x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64).then_some(x as usize)
}

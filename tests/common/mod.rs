//! Helpers shared by the parity and weights tests: fixture paths, safetensors loading, relative L2,
//! scratch folders and folder copies. Each test binary uses a different subset.
#![allow(dead_code)]

pub mod rss;

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Per-module tolerance (relative L2, float32 on the CPU).
pub const MODULE_TOL: f64 = 1e-5;
/// Whole-pipeline tolerance (relative L2 of the final latents or the decoded image).
pub const PIPELINE_TOL: f64 = 1e-4;

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// `tests/fixtures/models/<name>` (`tiny-a`, `tiny-b`).
pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// `tests/fixtures/refs/<model>/<file>`.
pub fn ref_file(model: &str, file: &str) -> PathBuf {
    fixtures().join("refs").join(model).join(file)
}

/// Every tensor of a safetensors file, on the CPU.
pub fn load_st(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One tensor of a safetensors file.
pub fn load_tensor(path: &Path, name: &str) -> Tensor {
    let mut all = load_st(path);
    all.remove(name).unwrap_or_else(|| {
        let mut names: Vec<_> = all.keys().cloned().collect();
        names.sort();
        panic!("{}: no tensor `{name}` (has {names:?})", path.display())
    })
}

/// Named tensor out of a loaded map.
pub fn get<'a>(map: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    map.get(name)
        .unwrap_or_else(|| panic!("reference has no tensor `{name}`"))
}

pub fn flat_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// `||ours - reference|| / ||reference||` in f64 (absolute when the reference is zero). Shapes must
/// match exactly.
pub fn rel_l2(ours: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(
        ours.dims(),
        reference.dims(),
        "shape mismatch: ours {:?}, reference {:?}",
        ours.dims(),
        reference.dims()
    );
    let a = flat_f64(ours);
    let b = flat_f64(reference);
    assert!(
        a.iter().all(|v| v.is_finite()),
        "non-finite values in our output"
    );
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Largest absolute elementwise difference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    flat_f64(a)
        .iter()
        .zip(flat_f64(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Asserts `rel_l2(ours, reference) <= tol`, printing the measured error either way (shown with
/// `--nocapture`), and returns it.
pub fn check(what: &str, ours: &Tensor, reference: &Tensor, tol: f64) -> f64 {
    let err = rel_l2(ours, reference);
    println!("{what}: rel L2 {err:.3e} (tol {tol:.0e})");
    assert!(
        err <= tol,
        "{what}: relative L2 {err:.3e} exceeds {tol:.0e}"
    );
    err
}

/// i64 token ids (as transformers writes them) → the u32 ids the text encoder takes.
pub fn ids_u32(ids: &Tensor) -> Tensor {
    let rows = ids.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap();
    let (b, n) = (rows.len(), rows[0].len());
    let flat: Vec<u32> = rows
        .into_iter()
        .flatten()
        .map(|v| u32::try_from(v).expect("token id fits u32"))
        .collect();
    Tensor::from_vec(flat, (b, n), &Device::Cpu).unwrap()
}

/// A scratch folder under the system temp dir, unique per process and call, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "glichen-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a folder tree (files are made writable in the copy).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            make_writable(&target);
        }
    }
}

#[cfg(unix)]
fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    perms.set_mode(perms.mode() | 0o600);
    std::fs::set_permissions(path, perms).unwrap();
}

#[cfg(not(unix))]
fn make_writable(path: &Path) {
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).unwrap();
}

/// `tests/fixtures/cases/<name>`.
pub fn case_dir(name: &str) -> PathBuf {
    fixtures().join("cases").join(name)
}

/// Case folders (those with a `layout.json`) under `root`, sorted by name.
pub fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("layout.json").is_file())
        .collect();
    out.sort();
    out
}

/// The model a case names (its `model` file, relative to the folder holding the case folders).
pub fn case_model(case: &Path) -> PathBuf {
    let name = std::fs::read_to_string(case.join("model"))
        .unwrap_or_else(|e| panic!("{}/model: {e}", case.display()));
    let root = case.parent().unwrap();
    let p = root.join(name.trim());
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

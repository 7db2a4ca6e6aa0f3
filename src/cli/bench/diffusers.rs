//! The diffusers side of `--compare`: finds Python and benches/diffusers_bench.py, runs the script
//! with the same threads, dtypes, rows and shapes, and reads back its JSON lines.

use super::rows::RowResult;
use super::{dtype_name, BenchArgs};
use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn resolve_python(args: &BenchArgs) -> PathBuf {
    if let Some(p) = &args.python {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("GLICHEN_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from("/opt/glichen-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

fn resolve_script(args: &BenchArgs) -> Result<PathBuf> {
    if let Some(s) = &args.script {
        return Ok(s.clone());
    }
    let candidates = [
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/diffusers_bench.py"
        )),
        PathBuf::from("benches/diffusers_bench.py"),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("benches/diffusers_bench.py not found; pass --script")
}

/// What the diffusers script says about itself and the machine.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct PythonMeta {
    #[serde(default)]
    pub(super) torch: String,
    #[serde(default)]
    pub(super) diffusers: String,
    #[serde(default)]
    pub(super) threads: Option<usize>,
    #[serde(default)]
    pub(super) cpu_capability: Option<String>,
    #[serde(default)]
    pub(super) device_name: Option<String>,
}

/// Runs the diffusers script and collects its JSON rows (its progress goes to our stderr).
pub(super) fn bench_diffusers(
    args: &BenchArgs,
    threads: usize,
    dtypes: &[DType],
    rows: &[&str],
) -> Result<(Vec<RowResult>, PythonMeta)> {
    let python = resolve_python(args);
    let script = resolve_script(args)?;
    let dt: Vec<&str> = dtypes.iter().map(|d| dtype_name(*d)).collect();
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--threads", &threads.to_string()])
        .args(["--runs", &args.runs.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--dtype", &dt.join(",")])
        .args([
            "--device",
            if args.device.starts_with("cuda") {
                &args.device
            } else {
                "cpu"
            },
        ])
        .args(["--rows", &rows.join(",")])
        .args(["--size", &args.size.to_string()])
        .args(["--boxes", &args.boxes.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--scheduler", &args.scheduler.to_string()])
        .args(["--full-runs", &args.full_runs.to_string()])
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(m) = &args.model {
        let folder = PathBuf::from(m);
        if !folder.is_dir() {
            bail!("--compare with --model needs a model folder (diffusers loads it with from_pretrained), got {m}");
        }
        cmd.args(["--model", m]);
    }
    eprintln!("running {} {} ...", python.display(), script.display());
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting {} (set --python or GLICHEN_PYTHON)",
            python.display()
        )
    })?;
    let stdout = child.stdout.take().context("diffusers script stdout")?;
    let mut results = Vec::new();
    let mut meta = PythonMeta::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(v) if v.get("meta").is_some() => {
                meta = serde_json::from_value(v["meta"].clone()).unwrap_or_default();
            }
            Ok(v) if v.get("row").is_some() => match serde_json::from_value::<RowResult>(v) {
                Ok(r) => results.push(r),
                Err(e) => eprintln!("diffusers script: unreadable row ({e}): {line}"),
            },
            _ => eprintln!("diffusers: {line}"),
        }
    }
    let status = child.wait()?;
    if !status.success() {
        eprintln!("warning: the diffusers script exited with {status}");
        if results.is_empty() {
            bail!("the diffusers script failed ({status}) before timing anything; see its output above");
        }
    }
    Ok((results, meta))
}

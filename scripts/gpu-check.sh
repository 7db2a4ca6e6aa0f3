#!/usr/bin/env bash
# One prepared GPU check for a lent machine with no cargo and no network (about 8 minutes):
#   1. the fixtures' parity on the GPU in f32 (relative L2 <= 1e-3, or the case's own `tol` if larger),
#   2. the same in f16 (<= 3e-2),
#   3. `glichen bench --full` in f16: a 25-step and a 50-step 512x512 generation (30 boxes, PNDM), each
#      followed by benches/diffusers_bench.py on the same shapes in fp16 (diffusers side by side),
#   4. the peak GPU memory of each side (nvidia-smi, device-wide, sampled every 200 ms; the diffusers
#      rows also carry torch's max_memory_allocated where the script reports it).
# Phases run in that order, each under its own deadline; a phase that no longer fits the budget is
# skipped and says so. Everything goes to $OUT (./gpu-check-out when OUT is unset): a log per phase,
# parity.tsv, bench.jsonl (the `glichen bench --json` lines and the diffusers lines, with "side" and
# "steps"), and summary.md (also printed at the end).
#
# Prepare here (no GPU needed):
#   scripts/build-cuda.sh --bin glichen       # -> target/cuda/release/glichen (22 min on 2 cores)
#   scripts/gpu-check.sh --prepare            # -> target/gpu-carry/glichen.xz   (stripped, xz -9)
#                                             #    target/gpu-carry/lib/libcurand.so.10.xz (from the build venv, ~41 MiB)
#                                             #    target/gpu-carry/wheels/      (diffusers 0.42.1 + deps, Python 3.11-3.13)
# then run it through the device tool (fixtures, benches/ and tests/fixtures/vocab are tracked and travel anyway):
#   run(command="bash scripts/gpu-check.sh", carry=["target/gpu-carry/glichen.xz", "target/gpu-carry/wheels"],
#       timeout_s=540)
# The carry limit is 64 MiB for all paths together: binary + wheels fit, binary + lib fit, all three may
# not. Carry lib/ instead of wheels/ where the machine's Python already has diffusers and transformers but
# no libcurand.so.10 is found there (the summary's machine block says which library came from where).
#
# --prepare does, by hand:
#   strip -o /tmp/glichen target/cuda/release/glichen && xz -T0 -9 -c /tmp/glichen > target/gpu-carry/glichen.xz
#   xz -9 -c ~/.cache/glichen-cuda-venv/lib/python3*/site-packages/nvidia/cu13/lib/libcurand.so.10 \
#       > target/gpu-carry/lib/libcurand.so.10.xz
#   pip download --only-binary=:all: -d target/gpu-carry/wheels --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       diffusers==0.42.1 transformers==5.24.0 safetensors==0.8.0    # then numpy/pillow/torch/nvidia-* removed
#
# On the GPU machine the binary needs, besides the driver's libcuda.so.1 (driver >= 580 for the PTX of
# CUDA 13.0), libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10 and libnvrtc.so.13.
# The script looks for each library `ldd` cannot resolve in: $GPU_CHECK_LIBS (carried; *.xz/*.gz/*.zst are
# unpacked), the site-packages `nvidia/**/lib` folders of the Python that has torch (CUDA 13 torch wheels
# ship nvidia/cu13/lib; curand 10 is the same soname in CUDA 12 and 13), /usr/local/cuda*/lib64 and
# targets/*/lib, the folder beside `nvcc`, and `ldconfig -p`; it prints what it found and what is missing.
# If the binary still cannot start, the Glichen phases are recorded as not run and the diffusers side
# still runs.
#
# Environment (all optional):
#   GLICHEN_BIN          the CUDA binary (target/cuda/release/glichen; else target/gpu-carry/glichen[.xz|.gz|.zst])
#   GPU_CHECK_DEVICE     cuda, cuda:N or cpu                     (cuda)
#   GPU_CHECK_STEPS      steps of the --full generations          ("25 50"; one bench phase each)
#   GPU_CHECK_SIZE       bench picture size                       (512)
#   GPU_CHECK_BUDGET     seconds for everything                   (450; the phases are cut to fit)
#   GPU_CHECK_CASES      only these case names (space/comma list) (all)
#   GPU_CHECK_CASE_DIRS  case folders                             ("tests/fixtures/cases tests/fixtures/original")
#   GPU_CHECK_DTYPES     parity dtypes                            ("f32 f16")
#   GPU_CHECK_TOL_F32 / GPU_CHECK_TOL_F16 / GPU_CHECK_TOL_BF16   (1e-3 / 3e-2 / 5e-2)
#   GPU_CHECK_JOBS       parity cases at once                     (4 on a GPU, 1 on cpu)
#   GPU_CHECK_CASE_TIMEOUT  seconds per parity case               (90)
#   GPU_CHECK_PARITY_CAP seconds per parity phase                 (150)
#   GPU_CHECK_BENCH_MIN  a bench phase starts only with this left (90)
#   GPU_CHECK_BENCH_DTYPE, GPU_CHECK_BENCH_ROWS, GPU_CHECK_RUNS, GPU_CHECK_WARMUP, GPU_CHECK_FULL_RUNS,
#   GPU_CHECK_SCHEDULER, GPU_CHECK_BOXES, GPU_CHECK_THREADS      (f16, unet_fuser_on,vae_decode, 3, 1, 1, pndm, 30, nproc)
#   GPU_CHECK_PYTHON     Python with torch for the diffusers side ($GLICHEN_PYTHON, /opt/glichen-venv/bin/python, python3)
#   GPU_CHECK_WHEELS     wheels installed (--no-index) when diffusers/transformers are missing (target/gpu-carry/wheels)
#   GPU_CHECK_LIBS       extra shared libraries                   (target/gpu-carry/lib)
#   GPU_CHECK_NICE       prefix for every command                 ("" ; e.g. "nice -n 10" on a shared CPU)
#   OUT                  results folder                           (./gpu-check-out)
#
# CPU smoke test (here):
#   GPU_CHECK_DEVICE=cpu GLICHEN_BIN=target/release/glichen GPU_CHECK_SIZE=64 GPU_CHECK_STEPS=2 \
#     GPU_CHECK_CASES="a_one_box tb_orig_one_step" GPU_CHECK_NICE="nice -n 10" OUT=/tmp/gc bash scripts/gpu-check.sh
#
# Exit status: 0 every parity case ran and passed; 1 a parity case failed (tolerance, error or timeout);
# 2 the binary cannot run (parity not run); 3 no failure, but some parity cases did not fit the budget.
# Bench failures show in summary.md and do not change the status.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CARRY="${GPU_CHECK_CARRY:-target/gpu-carry}"

# ---------------------------------------------------------------------------------------------
# --prepare: the carry folder, made here.
if [[ "${1:-}" == "--prepare" ]]; then
  src="${GLICHEN_BIN:-target/cuda/release/glichen}"
  [[ -x "$src" ]] || { echo "no $src: build it with scripts/build-cuda.sh --bin glichen" >&2; exit 1; }
  mkdir -p "$CARRY/wheels" "$CARRY/lib"
  if [[ ! "$CARRY/glichen.xz" -nt "$src" ]]; then
    tmp="$(mktemp -d)"
    strip -o "$tmp/glichen" "$src"
    echo "[gpu-check] $src: $(stat -c %s "$src") bytes, stripped $(stat -c %s "$tmp/glichen"); compressing"
    nice -n 10 xz -T0 -9 -c "$tmp/glichen" >"$CARRY/glichen.xz"
    rm -rf "$tmp"
  fi
  # libcurand.so.10: candle creates a cuRAND generator with every CUDA device, and CUDA 13 torch wheels
  # do not bring it (about 41 MiB as .xz; carry lib/ only where the GPU machine lacks it).
  venv="${GLICHEN_CUDA_VENV:-$HOME/.cache/glichen-cuda-venv}"
  curand="${GPU_CHECK_CURAND:-$(ls "$venv"/lib/python3*/site-packages/nvidia/cu13/lib/libcurand.so.10 2>/dev/null | head -n 1)}"
  if [[ -f "$curand" && ! "$CARRY/lib/libcurand.so.10.xz" -nt "$curand" ]]; then
    echo "[gpu-check] compressing $curand"
    nice -n 10 xz -T0 -9 -c "$curand" >"$CARRY/lib/libcurand.so.10.xz"
  fi
  # diffusers 0.42.1 needs Python >= 3.11.
  for v in ${GPU_CHECK_PYVERS:-3.11 3.12 3.13}; do
    python3 -m pip download -q --disable-pip-version-check --only-binary=:all: -d "$CARRY/wheels" \
      --python-version "$v" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform linux_x86_64 \
      diffusers==0.42.1 transformers==5.24.0 safetensors==0.8.0 || echo "[gpu-check] no wheel set for Python $v"
  done
  # what a PyTorch machine has anyway, and the heavy ones
  rm -f "$CARRY"/wheels/{numpy,pillow,torch,nvidia_,triton}*.whl
  du -sh "$CARRY"/glichen.xz "$CARRY"/lib "$CARRY"/wheels
  echo "[gpu-check] carry (64 MiB at most in all): target/gpu-carry/glichen.xz, plus lib/ where the GPU machine has"
  echo "            no libcurand.so.10, plus wheels/ where its Python has no diffusers/transformers"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
T0=$SECONDS
DEV="${GPU_CHECK_DEVICE:-cuda}"
STEPS="${GPU_CHECK_STEPS:-25 50}"
SIZE="${GPU_CHECK_SIZE:-512}"
BUDGET="${GPU_CHECK_BUDGET:-450}"
CASE_DIRS="${GPU_CHECK_CASE_DIRS:-tests/fixtures/cases tests/fixtures/original}"
CASES="${GPU_CHECK_CASES:-}"
DTYPES="${GPU_CHECK_DTYPES:-f32 f16}"
if [[ "$DEV" == cpu ]]; then JOBS_DEFAULT=1; else JOBS_DEFAULT=4; fi
JOBS="${GPU_CHECK_JOBS:-$JOBS_DEFAULT}"
CASE_TIMEOUT="${GPU_CHECK_CASE_TIMEOUT:-90}"
PARITY_CAP="${GPU_CHECK_PARITY_CAP:-150}"
BENCH_MIN="${GPU_CHECK_BENCH_MIN:-90}"
BENCH_DTYPE="${GPU_CHECK_BENCH_DTYPE:-f16}"
BENCH_ROWS="${GPU_CHECK_BENCH_ROWS:-unet_fuser_on,vae_decode}"
RUNS="${GPU_CHECK_RUNS:-3}"
WARMUP="${GPU_CHECK_WARMUP:-1}"
FULL_RUNS="${GPU_CHECK_FULL_RUNS:-1}"
SCHED="${GPU_CHECK_SCHEDULER:-pndm}"
BOXES="${GPU_CHECK_BOXES:-30}"
THREADS="${GPU_CHECK_THREADS:-$(nproc)}"
WHEELS="${GPU_CHECK_WHEELS:-$CARRY/wheels}"
LIBS="${GPU_CHECK_LIBS:-$CARRY/lib}"
read -r -a NICE <<<"${GPU_CHECK_NICE:-}"
OUT="${OUT:-./gpu-check-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export CUDA_CACHE_MAXSIZE="${CUDA_CACHE_MAXSIZE:-2147483648}" # the driver's PTX JIT cache, shared by every process

tol_of() { case "$1" in f32) echo "${GPU_CHECK_TOL_F32:-1e-3}" ;; f16) echo "${GPU_CHECK_TOL_F16:-3e-2}" ;;
  bf16) echo "${GPU_CHECK_TOL_BF16:-5e-2}" ;; *) echo 1e-3 ;; esac; }
log() { printf '[gpu-check %4ds] %s\n' "$((SECONDS - T0))" "$*" | tee -a "$OUT/gpu-check.log" >&2; }
left() { echo $((BUDGET - (SECONDS - T0))); }
min() { if (($1 < $2)); then echo "$1"; else echo "$2"; fi; }
phase() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$OUT/phases.tsv"; } # name status seconds note
: >"$OUT/phases.tsv"
: >"$OUT/parity.tsv"
: >"$OUT/gpu-check.log"
: >"$OUT/peaks.tsv"
POLL_PID=""
cleanup() {
  if [[ -n "$POLL_PID" ]]; then kill "$POLL_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# The machine.
GPU_IDX=0
[[ "$DEV" == cuda:* ]] && GPU_IDX="${DEV#cuda:}"
HAVE_SMI=0
if [[ "$DEV" == cuda* ]] && command -v nvidia-smi >/dev/null 2>&1; then HAVE_SMI=1; fi
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "host: $(uname -n), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "device: $DEV"
  if [[ $HAVE_SMI == 1 ]]; then
    echo "nvidia-smi -L: $(nvidia-smi -L 2>&1 | tr '\n' ';')"
    echo "gpu: $(nvidia-smi -i "$GPU_IDX" --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1)"
    echo "driver CUDA: $(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' || echo '?')"
  else
    echo "nvidia-smi: not used (device $DEV$(command -v nvidia-smi >/dev/null || echo ', not installed'))"
  fi
} >"$OUT/machine.txt"
if [[ $HAVE_SMI == 1 ]]; then
  drv="$(nvidia-smi -i "$GPU_IDX" --query-gpu=driver_version --format=csv,noheader 2>/dev/null || echo 0)"
  if ((${drv%%.*} < 580)); then
    echo "warning: driver $drv < 580: the CUDA 13.0 PTX will not load (CUDA_ERROR_UNSUPPORTED_PTX_VERSION)" >>"$OUT/machine.txt"
  fi
fi

# Python for the diffusers side.
PY="${GPU_CHECK_PYTHON:-${GLICHEN_PYTHON:-}}"
if [[ -z "$PY" ]]; then
  if [[ -x /opt/glichen-venv/bin/python ]]; then PY=/opt/glichen-venv/bin/python; else PY="$(command -v python3 || command -v python || echo python3)"; fi
fi
COMPARE_PY="$(command -v python3 || echo "$PY")"

# ---------------------------------------------------------------------------------------------
# The binary and its libraries.
BIN="${GLICHEN_BIN:-target/cuda/release/glichen}"
if [[ ! -x "$BIN" ]]; then
  for cand in "$BIN" "$CARRY/glichen"; do
    for ext in "" .xz .gz .zst; do
      f="$cand$ext"
      [[ -f "$f" ]] || continue
      case "$ext" in
        "") cp "$f" "$WORK/glichen" ;;
        .xz) if command -v xz >/dev/null; then xz -dc "$f" >"$WORK/glichen"
             else "$COMPARE_PY" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$f" "$WORK/glichen"; fi ;;
        .gz) gzip -dc "$f" >"$WORK/glichen" ;;
        .zst) zstd -qdc "$f" >"$WORK/glichen" ;;
      esac
      chmod +x "$WORK/glichen"; log "binary: unpacked $f"; BIN="$WORK/glichen"; break 2
    done
  done
fi
BIN_OK=0
if [[ -x "$BIN" ]]; then
  [[ "$BIN" == /* ]] || BIN="$REPO/$BIN"
  echo "binary: $BIN ($(stat -c %s "$BIN") bytes, sha256 $(sha256sum "$BIN" | cut -c1-16))" >>"$OUT/machine.txt"
  # Resolve the libraries ldd cannot find.
  missing() { ldd "$BIN" 2>/dev/null | awk '/not found/ {print $1}' | sort -u; }
  need="$(missing)"
  if [[ -n "$need" ]]; then
    log "binary needs: $(echo $need)"
    roots=()
    if [[ -d "$LIBS" ]]; then
      mkdir -p "$WORK/lib"
      for f in "$LIBS"/*; do
        [[ -f "$f" ]] || continue
        b="${f##*/}"
        case "$b" in
          *.xz) xz -dc "$f" >"$WORK/lib/${b%.xz}" ;; *.gz) gzip -dc "$f" >"$WORK/lib/${b%.gz}" ;;
          *.zst) zstd -qdc "$f" >"$WORK/lib/${b%.zst}" ;; *) ln -s "$(cd "${f%/*}" && pwd)/$b" "$WORK/lib/$b" ;;
        esac
      done
      roots+=("$WORK/lib")
    fi
    while IFS= read -r d; do [[ -d "$d" ]] && roots+=("$d"); done < <(
      "$PY" - 2>/dev/null <<'EOF' || true
import site, sysconfig, glob, os
dirs = set(site.getsitepackages() + [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
try: dirs.add(site.getusersitepackages())
except Exception: pass
for d in sorted(dirs):
    for p in glob.glob(os.path.join(d, "nvidia", "**", "lib*"), recursive=True) + [os.path.join(d, "torch", "lib")]:
        if os.path.isdir(p): print(p)
EOF
    )
    nvcc_dir="$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/bin/nvcc)")/.."
    for d in "$nvcc_dir/lib64" "$nvcc_dir/lib" /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib \
             /usr/lib/x86_64-linux-gnu /usr/lib64; do
      [[ -d "$d" ]] && roots+=("$d")
    done
    found_dirs=""
    for so in $need; do
      hit=""
      for d in ${roots[@]+"${roots[@]}"}; do
        if [[ -e "$d/$so" ]]; then hit="$(cd "$d" && pwd)"; break; fi
      done
      if [[ -z "$hit" ]]; then
        p="$(ldconfig -p 2>/dev/null | awk -v s="$so" '$1 == s {print $NF; exit}')"
        [[ -n "$p" ]] && hit="$(dirname "$p")"
      fi
      if [[ -n "$hit" ]]; then
        echo "lib: $so <- $hit" >>"$OUT/machine.txt"
        [[ ":$found_dirs:" == *":$hit:"* ]] || found_dirs="${found_dirs:+$found_dirs:}$hit"
      else
        echo "lib: $so MISSING (searched: ${roots[*]:-none}, ldconfig)" >>"$OUT/machine.txt"
      fi
    done
    [[ "$found_dirs" == */stubs* ]] && log "warning: a stubs folder is on the library path"
    if [[ -n "$found_dirs" ]]; then export LD_LIBRARY_PATH="$found_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
    still="$(missing)"
    if [[ -n "$still" ]]; then echo "libs still missing: $(echo $still)" >>"$OUT/machine.txt"; fi
  fi
  echo "LD_LIBRARY_PATH: ${LD_LIBRARY_PATH:-}" >>"$OUT/machine.txt"
  if ver="$("${NICE[@]}" "$BIN" --version 2>&1)"; then
    BIN_OK=1; echo "glichen: $ver" >>"$OUT/machine.txt"
  else
    echo "glichen cannot start: $(echo "$ver" | tail -n 3 | tr '\n' ' ')" >>"$OUT/machine.txt"
  fi
else
  echo "binary: none ($BIN; nor $CARRY/glichen[.xz|.gz|.zst])" >>"$OUT/machine.txt"
fi
cat "$OUT/machine.txt" >&2

# ---------------------------------------------------------------------------------------------
# The diffusers side's packages, installed in the background while parity runs.
py_check() { "$PY" -c 'import torch, diffusers, transformers, safetensors; print("torch", torch.__version__, "cuda", torch.version.cuda, "| diffusers", diffusers.__version__, "| transformers", transformers.__version__)' 2>&1; }
(
  if out="$(py_check)"; then echo "python: $PY: $out"
  elif [[ -d "$WHEELS" ]]; then
    echo "python: $PY lacks a package ($(echo "$out" | tail -n 1)); installing from $WHEELS"
    PIP_BREAK_SYSTEM_PACKAGES=1 "${NICE[@]}" "$PY" -m pip install -q --disable-pip-version-check --no-index \
      --find-links "$WHEELS" diffusers transformers safetensors 2>&1 | tail -n 20 || true
    if out="$(py_check)"; then echo "python: $PY: $out"; else echo "python: still unusable: $(echo "$out" | tail -n 1)"; fi
  else
    echo "python: $PY lacks a package ($(echo "$out" | tail -n 1)) and there is no wheel folder $WHEELS"
  fi
) >"$OUT/python-setup.log" 2>&1 &
PY_SETUP_PID=$!

# ---------------------------------------------------------------------------------------------
# Parity: `glichen generate` on every case, final latents against the expected ones (relative L2,
# the same arithmetic as ../shared/tools/st_compare.py, which does not travel to the GPU machine).
cat >"$WORK/st_compare.py" <<'EOF'
import json, math, struct, sys
def read(path, name="latents"):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))[name]
        start, end = meta["data_offsets"]
        f.seek(8 + n + start)
        raw = f.read(end - start)
    if meta["dtype"] == "BF16":
        vals = [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
        return meta["shape"], vals
    fmt = {"F32": "f", "F16": "e", "F64": "d"}[meta["dtype"]]
    return meta["shape"], struct.unpack("<%d%s" % (len(raw) // struct.calcsize(fmt), fmt), raw)
(sa, a), (sb, b) = read(sys.argv[1]), read(sys.argv[2])
if list(sa) != list(sb):
    print(f"shape {sb} != expected {sa}"); sys.exit(1)
if any(math.isnan(x) or math.isinf(x) for x in b):
    print("NaN/inf in output"); sys.exit(1)
rel = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b))) / (math.sqrt(sum(x * x for x in a)) or 1.0)
print(f"{rel:.3e}")
sys.exit(0 if rel <= float(sys.argv[3]) else 1)
EOF

ALL_CASES=()
for d in $CASE_DIRS; do
  [[ -d "$d" ]] || { log "no case folder $d"; continue; }
  for c in "$d"/*/; do
    c="${c%/}"
    [[ -f "$c/layout.json" && -f "$c/model" ]] || continue
    if [[ -n "$CASES" ]]; then
      [[ " ${CASES//,/ } " == *" ${c##*/} "* ]] || continue
    fi
    ALL_CASES+=("$c")
  done
done

# One case: writes "case dtype rel tol status seconds note" to $WORK/res/<dtype>/<name>.
run_case() {
  local c="$1" dt="$2" to="$3" name id model tol ctol res st=0 t=$SECONDS status note="" rel="-"
  name="${c##*/}"; id="$(basename "$(dirname "$c")")/$name"
  model="$(dirname "$c")/$(cat "$c/model")"
  tol="$(tol_of "$dt")"
  if [[ -f "$c/tol" ]]; then
    ctol="$(tr -d ' \n' <"$c/tol")"
    tol="$(awk -v a="$tol" -v b="$ctol" 'BEGIN {print (b + 0 > a + 0) ? b : a}')"
  fi
  local noise=()
  [[ -f "$c/noise.safetensors" ]] && noise=(--noise "$c/noise.safetensors")
  local dir="$OUT/parity-$dt"
  timeout -k 5 "$to" "${NICE[@]}" "$BIN" generate --device "$DEV" --dtype "$dt" --model "$model" \
    --layout "$c/layout.json" --init-latents "$c/init_latents.safetensors" "${noise[@]}" \
    --save-latents "$WORK/out-$dt-$name.safetensors" --out "$WORK/out-$dt-$name.png" >"$dir/$name.log" 2>&1 || st=$?
  if ((st == 0)); then
    if res="$("$COMPARE_PY" "$WORK/st_compare.py" "$c/expected_latents.safetensors" "$WORK/out-$dt-$name.safetensors" "$tol" 2>&1)"; then
      status=pass; rel="$res"
    else
      status=FAIL
      if [[ "$res" =~ ^[0-9.e+-]+$ ]]; then rel="$res"; else note="$res"; fi
    fi
  elif ((st == 124 || st == 137)); then
    status=FAIL; note="timed out after ${to} s"
  else
    note="$(grep -v '^\s*$' "$dir/$name.log" | tail -n 2 | tr '\n\t' '  ' | cut -c1-300)"
    if [[ "$DEV" == cpu && "$dt" != f32 ]] && grep -qiE 'not supported|unsupported|not implemented|no (cpu )?kernel' "$dir/$name.log"; then
      status=skipped; note="not supported on cpu: $note"
    else
      status=FAIL; note="generate exited $st: $note"
    fi
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$dt" "$rel" "$tol" "$status" "$((SECONDS - t))" "$note" >"$WORK/res/$dt/$name"
}

case_jobs() { jobs -rp | { grep -vx "${PY_SETUP_PID:-none}" || true; } | wc -l; }

parity_phase() { # dtype
  local dt="$1" t=$SECONDS deadline n=0 c name
  mkdir -p "$OUT/parity-$dt" "$WORK/res/$dt"
  local budget; budget="$(min "$PARITY_CAP" "$(($(left) - 10))")"
  if ((${#ALL_CASES[@]} == 0)); then phase "parity $dt" "no cases" 0 "$CASE_DIRS ${CASES:+(filter: $CASES)}"; return; fi
  if ((BIN_OK == 0)); then
    for c in "${ALL_CASES[@]}"; do
      printf '%s\t%s\t-\t%s\tnot run\t0\tbinary cannot run (see machine info)\n' "$(basename "$(dirname "$c")")/${c##*/}" "$dt" "$(tol_of "$dt")" >>"$OUT/parity.tsv"
    done
    phase "parity $dt" "not run" 0 "binary cannot run"; return
  fi
  if ((budget < 20)); then
    for c in "${ALL_CASES[@]}"; do
      printf '%s\t%s\t-\t%s\tnot run\t0\tno time left in the budget\n' "$(basename "$(dirname "$c")")/${c##*/}" "$dt" "$(tol_of "$dt")" >>"$OUT/parity.tsv"
    done
    phase "parity $dt" "skipped" 0 "$(left) s left"; return
  fi
  deadline=$((SECONDS + budget))
  log "parity $dt: ${#ALL_CASES[@]} cases, $JOBS at a time, ${budget} s"
  for c in "${ALL_CASES[@]}"; do
    while (($(case_jobs) >= JOBS)); do wait -n || true; done
    local rest=$((deadline - SECONDS))
    if ((rest < 5)); then
      name="${c##*/}"
      printf '%s\t%s\t-\t%s\tnot run\t0\tparity %s phase out of time\n' "$(basename "$(dirname "$c")")/$name" "$dt" "$(tol_of "$dt")" "$dt" >"$WORK/res/$dt/$name"
      continue
    fi
    run_case "$c" "$dt" "$(min "$CASE_TIMEOUT" "$rest")" &
    n=$((n + 1))
  done
  # Wait for the cases (not for the background pip install).
  for pid in $(jobs -rp); do [[ "$pid" == "$PY_SETUP_PID" ]] || wait "$pid" || true; done
  local pass fail
  cat "$WORK/res/$dt"/* >>"$OUT/parity.tsv" 2>/dev/null || true
  pass="$(cat "$WORK/res/$dt"/* 2>/dev/null | awk -F'\t' '$5 == "pass"' | wc -l)"
  fail="$(cat "$WORK/res/$dt"/* 2>/dev/null | awk -F'\t' '$5 == "FAIL"' | wc -l)"
  { sort "$WORK/res/$dt"/* 2>/dev/null || true; } | tee "$OUT/phase-parity-$dt.log" | awk -F'\t' '{printf "  %-4s %-45s %s %s\n", $5, $1, $3, $7}' >&2
  phase "parity $dt" "$pass pass, $fail fail of ${#ALL_CASES[@]}" "$((SECONDS - t))" "tol $(tol_of "$dt"), $JOBS jobs, $n started"
}

# Memory of the GPU, device-wide, sampled every 200 ms while a command runs.
poll_start() { # file
  POLL_PID=""
  if ((HAVE_SMI)); then
    nvidia-smi -i "$GPU_IDX" --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$1" 2>/dev/null &
    POLL_PID=$!
  fi
}
poll_stop() { # file side steps baseline
  if [[ -n "$POLL_PID" ]]; then
    kill "$POLL_PID" 2>/dev/null || true; wait "$POLL_PID" 2>/dev/null || true; POLL_PID=""
    local peak; peak="$(sort -n "$1" 2>/dev/null | tail -n 1)"
    printf '%s\t%s\t%s\t%s\n' "$2" "$3" "${peak:-?}" "$4" >>"$OUT/peaks.tsv"
  fi
}
gpu_used() { if ((HAVE_SMI)); then nvidia-smi -i "$GPU_IDX" --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -n 1; else echo "?"; fi; }

bench_phase() { # steps
  local n="$1" t=$SECONDS to st base rows="$BENCH_ROWS"
  if (($(left) < BENCH_MIN)); then phase "bench $n steps" skipped 0 "$(left) s left < $BENCH_MIN"; return; fi
  local pydev="cpu"; [[ "$DEV" == cuda* ]] && pydev="$DEV"
  # Glichen
  if ((BIN_OK)); then
    to="$(min $(($(left) * 45 / 100)) 200)"
    log "bench $n steps: glichen ($to s)"
    base="$(gpu_used)"; poll_start "$OUT/bench-$n-glichen.smi"; st=0
    timeout -k 5 "$to" "${NICE[@]}" "$BIN" bench --device "$DEV" --dtype "$BENCH_DTYPE" --full --steps "$n" \
      --scheduler "$SCHED" --rows "$rows" --runs "$RUNS" --warmup "$WARMUP" --full-runs "$FULL_RUNS" \
      --size "$SIZE" --boxes "$BOXES" --threads "$THREADS" --json "$OUT/bench-$n-glichen.jsonl" \
      >"$OUT/bench-$n-glichen.log" 2>&1 || st=$?
    poll_stop "$OUT/bench-$n-glichen.smi" glichen "$n" "$base"
    phase "bench $n glichen" "$( ((st == 0)) && echo ok || echo "exit $st$( ((st == 124)) && echo ' (timeout)')")" "$((SECONDS - t))" "timeout $to s; bench-$n-glichen.log"
  else
    phase "bench $n glichen" "not run" 0 "binary cannot run"
  fi
  # diffusers
  local t2=$SECONDS
  if [[ -n "${PY_SETUP_PID:-}" ]]; then wait "$PY_SETUP_PID" 2>/dev/null || true; PY_SETUP_PID=""; cat "$OUT/python-setup.log" >&2; fi
  to=$(($(left) - 5))
  if ((to < 30)); then phase "bench $n diffusers" skipped 0 "$(left) s left"; return; fi
  to="$(min "$to" 240)"
  log "bench $n steps: diffusers ($to s)"
  base="$(gpu_used)"; poll_start "$OUT/bench-$n-diffusers.smi"; st=0
  timeout -k 5 "$to" "${NICE[@]}" "$PY" benches/diffusers_bench.py --threads "$THREADS" --runs "$RUNS" --warmup "$WARMUP" \
    --dtype "$BENCH_DTYPE" --device "$pydev" --rows "$rows,generation,first_preview" --size "$SIZE" --boxes "$BOXES" \
    --steps "$n" --scheduler "$SCHED" --full-runs "$FULL_RUNS" \
    >"$OUT/bench-$n-diffusers.jsonl" 2>"$OUT/bench-$n-diffusers.log" || st=$?
  poll_stop "$OUT/bench-$n-diffusers.smi" diffusers "$n" "$base"
  phase "bench $n diffusers" "$( ((st == 0)) && echo ok || echo "exit $st$( ((st == 124)) && echo ' (timeout)')")" "$((SECONDS - t2))" "timeout $to s; bench-$n-diffusers.log"
}

# ---------------------------------------------------------------------------------------------
for dt in $DTYPES; do parity_phase "$dt"; done
for n in $STEPS; do bench_phase "$n"; done
if [[ -n "${PY_SETUP_PID:-}" ]]; then wait "$PY_SETUP_PID" 2>/dev/null || true; fi
log "done in $((SECONDS - T0)) s of $BUDGET"

# ---------------------------------------------------------------------------------------------
# summary.md and bench.jsonl
"$COMPARE_PY" - "$OUT" "$BENCH_ROWS" "$BENCH_DTYPE" "$SIZE" "$BOXES" "$SCHED" "$((SECONDS - T0))" "$BUDGET" <<'EOF'
import glob, json, os, re, sys
out, rows, bdt, size, boxes, sched, took, budget = sys.argv[1:9]
rows = [r for r in rows.split(",") if r] + ["generation", "first_preview"]
def tsv(name):
    p = os.path.join(out, name)
    return [l.rstrip("\n").split("\t") for l in open(p) if l.strip()] if os.path.exists(p) else []
L = ["# GPU check", ""]
L += ["```"] + [l.rstrip() for l in open(os.path.join(out, "machine.txt"))] + ["```", ""]
ps = os.path.join(out, "python-setup.log")
if os.path.exists(ps):
    L += ["Python (diffusers side): " + " / ".join(l.strip()[len("python: "):] for l in open(ps) if l.startswith("python:")), ""]
L += ["## Phases", "", "| phase | result | seconds | note |", "|---|---|---:|---|"]
L += [f"| {p[0]} | {p[1]} | {p[2]} | {p[3]} |" for p in tsv("phases.tsv")]
L += ["", f"Total {took} s of a {budget} s budget.", ""]
par = sorted(tsv("parity.tsv"), key=lambda r: (r[1] != "f32", r[1], r[0]))
L += ["## Parity (final latents, relative L2)", ""]
if par:
    for dt in dict.fromkeys(r[1] for r in par):
        rs = [r for r in par if r[1] == dt]
        c = {s: sum(r[4] == s for r in rs) for s in ("pass", "FAIL", "skipped", "not run")}
        L.append(f"- {dt}: {c['pass']} pass, {c['FAIL']} fail, {c['skipped']} skipped, {c['not run']} not run"
                 f" of {len(rs)}; worst rel L2 {max((float(r[2]) for r in rs if r[2] != '-'), default=float('nan')):.2e}")
    L += ["", "| case | dtype | rel L2 | tol | result | s | note |", "|---|---|---:|---:|---|---:|---|"]
    L += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6].replace('|', '/')} |" for r in par]
else:
    L.append("no parity results")
L += ["", f"## Bench ({bdt}, {size}×{size}, {boxes} boxes, {sched}, random SD 1.4 GLIGEN weights)", ""]
merged = []
peaks = {(p[0], p[1]): p for p in tsv("peaks.tsv")}
steps_done = sorted({int(m.group(1)) for f in glob.glob(os.path.join(out, "bench-*-*.jsonl"))
                     for m in [re.search(r"bench-(\d+)-", os.path.basename(f))] if m})
table = []
for n in steps_done:
    side_rows = {}
    for side in ("glichen", "diffusers"):
        p = os.path.join(out, f"bench-{n}-{side}.jsonl")
        if not os.path.exists(p):
            continue
        for line in open(p):
            try:
                v = json.loads(line)
            except ValueError:
                continue
            v["side"], v["steps"] = side, n
            merged.append(v)
            if "row" in v:
                side_rows[(side, v["row"])] = v
        if (side, str(n)) in peaks:
            pk = peaks[(side, str(n))]
            merged.append({"side": side, "steps": n, "row": "gpu_memory_used_peak_mib", "peak_mib": pk[2], "before_mib": pk[3]})
    def cell(v):
        if not v: return "–"
        if v.get("median_s") is None: return "error: " + str(v.get("error") or "?")[:80].replace("|", "/")
        return f"{v['median_s']:.3f} s"
    for r in rows:
        g, d = side_rows.get(("glichen", r)), side_rows.get(("diffusers", r))
        ratio = "–"
        if g and d and g.get("median_s") and d.get("median_s"):
            ratio = f"{g['median_s'] / d['median_s']:.2f}×"
        gib = lambda v, k: f"{v[k] / 2**30:.2f} GiB" if v and v.get(k) else "–"
        label = f"{r} ({n} steps)" if r in ("generation", "first_preview") else r
        table.append(f"| {n} | {label} | {cell(g)} | {cell(d)} | {ratio} | {gib(g, 'peak_rss_bytes')} | "
                     f"{gib(d, 'peak_rss_bytes')} | {gib(d, 'peak_device_bytes')} |")
with open(os.path.join(out, "bench.jsonl"), "w") as f:
    for v in merged:
        f.write(json.dumps(v) + "\n")
if table:
    L += ["| steps | row | Glichen | diffusers | Glichen / diffusers | Glichen peak RSS | diffusers peak RSS | diffusers torch max_allocated |",
          "|---:|---|---:|---:|---:|---:|---:|---:|"]
    L += table
else:
    L.append("no bench results")
L += ["", "Peak GPU memory (nvidia-smi memory.used, device-wide, 200 ms samples, while that side ran):", ""]
if peaks:
    L += ["| steps | side | peak MiB | before MiB | added MiB |", "|---:|---|---:|---:|---:|"]
    for (side, n), p in sorted(peaks.items(), key=lambda kv: (int(kv[0][1]), kv[0][0] != "glichen")):
        try: added = str(int(p[2]) - int(p[3]))
        except ValueError: added = "?"
        L.append(f"| {n} | {side} | {p[2]} | {p[3]} | {added} |")
else:
    L.append("not measured (no nvidia-smi or not a CUDA device)")
L += ["", "Files: gpu-check.log, phases.tsv, parity.tsv, parity-<dtype>/<case>.log, bench-<steps>-<side>.{log,jsonl}, bench.jsonl, machine.txt."]
open(os.path.join(out, "summary.md"), "w").write("\n".join(L) + "\n")
EOF
cat "$OUT/summary.md"

# Exit status from parity alone.
if ((BIN_OK == 0)); then exit 2; fi
if awk -F'\t' '$5 == "FAIL" {f = 1} END {exit !f}' "$OUT/parity.tsv"; then exit 1; fi
if awk -F'\t' '$5 == "not run" {f = 1} END {exit !f}' "$OUT/parity.tsv"; then exit 3; fi
exit 0

#!/usr/bin/env bash
# Fuzzes every reader of outside data (targets in fuzz_targets/, entries in src/fuzzing.rs):
# seeds each corpus from the test fixtures, runs each target for RUNS executions or SECONDS,
# whichever comes first, and prints executions, corpus size and crashes per target. Crash inputs
# land in fuzz/artifacts/TARGET/; copy each into fuzz/regressions/TARGET/ once fixed, where
# `cargo test --test fuzz_regressions` (stable) replays it.
#
#   bash fuzz/run.sh [RUNS=1000000] [SECONDS=1800] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-1000000}
secs=${2:-1800}
shift 2 || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(layout_json png_chunk import data_uri picture latents pickle torch_zip torch_load tokenizer)
fi
fixtures=../tests/fixtures

seed() {
  local target=$1
  shift
  mkdir -p "corpus/$target"
  local f
  for f in "$@"; do
    if [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 1048576 ]; then
      cp "$f" "corpus/$target/$(sha1sum <"$f" | cut -c1-16)"
    fi
  done
}

shopt -s nullglob
layouts=("$fixtures"/cases/*/layout.json "$fixtures"/original/*/layout.json)
pictures=("$fixtures"/cases/*/*.png "$fixtures"/original/*/*.png "$fixtures"/refs/*/*.png)
seed layout_json "${layouts[@]}"
seed import "${layouts[@]}" "${pictures[@]}"
seed png_chunk "${pictures[@]}"
seed picture "${pictures[@]}"
seed latents "$fixtures"/cases/*/init_latents.safetensors "$fixtures"/cases/*/noise.safetensors
seed torch_zip "$fixtures"/hostile/*.bin
seed torch_load "$fixtures"/hostile/*.bin "$fixtures"/hed/tiny-hed.pth "$fixtures"/original/SD_input_conv_weight_bias.pth
python3 - "$fixtures" <<'PY'
import base64, glob, hashlib, json, os, sys, zipfile

fixtures = sys.argv[1]


def put(target, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/{hashlib.sha1(data).hexdigest()[:16]}", "wb") as f:
        f.write(data)


for path in glob.glob(f"{fixtures}/**/*.bin", recursive=True) + glob.glob(f"{fixtures}/**/*.pth", recursive=True):
    if os.path.getsize(path) > 64 << 20 or not zipfile.is_zipfile(path):
        continue
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.endswith("data.pkl"):
                put("pickle", z.read(name))
for path in sorted(glob.glob(f"{fixtures}/cases/*/*.png"))[:4]:
    data = open(path, "rb").read()
    put("data_uri", b"data:image/png;base64," + base64.b64encode(data))
cases = json.load(open(f"{fixtures}/tokenizer_cases.json"))
texts = cases if isinstance(cases, list) else cases.get("cases", [])
for case in texts:
    text = case if isinstance(case, str) else case.get("text", "")
    put("tokenizer", text.encode())
PY

printf '\n| target | executions | seconds | corpus | crashes |\n|---|---:|---:|---:|---:|\n' >summary.md
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  started=$(date +%s)
  # No sanitizer: the targets are safe Rust; what is hunted is panics, aborts, hangs and
  # allocations (rss_limit_mb, malloc_limit_mb) out of proportion to the input.
  cargo +nightly fuzz run --sanitizer none "$t" "corpus/$t" -- \
    -runs="$runs" -max_total_time="$secs" -dict=layout.dict -rss_limit_mb=4096 \
    -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || true
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  crashes=$(find "artifacts/$t" -type f | wc -l)
  printf '| %s | %s | %s | %s | %s |\n' "$t" "${execs:-0}" "$(($(date +%s) - started))" \
    "$(find "corpus/$t" -type f | wc -l)" "$crashes" | tee -a summary.md
  tail -5 "$log"
  rm -f "$log"
done
cat summary.md

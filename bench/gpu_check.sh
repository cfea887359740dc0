#!/usr/bin/env bash
# Verify every GPU path of evolve on a machine with an NVIDIA GPU, in one command (see bench/README.md, "matmul").
#
#   bench/gpu_check.sh            from anywhere; works on the repository this script is in
#
# 1. installs the GPU extras into the current Python (pip install -e ".[gpu,cuda-tools,test]"; SKIP_INSTALL=1 skips),
# 2. runs every test marked `gpu` (the ladder on the real bench settings records its % of cuBLAS per rung),
# 3. runs `evolve run problems/matmul --mutator tune --iterations 20` on a copy of the problem whose timed shapes are
#    smaller (2048^3 and 1024x3072x1536; GPU_CHECK_FULL=1 keeps settings.toml's 4096^3 and 2048x6144x3072),
# 4. prints one summary: tests passed/failed, the ladder's % of cuBLAS per rung, the run's seed and best scores.
# Sized to finish within 8 minutes on one H100 (most of it is the tests).
#
# Exit status: 0 everything passed; 1 a test or the run failed; 2 no GPU here (nothing was run); 3 setup failed
# (installation, or CuPy cannot use the GPU).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
cd "$ROOT" || exit 3

say() { printf 'gpu_check: %s\n' "$*"; }

# ---- 0. is there a GPU at all? (fast: no Python, no CUDA libraries) -------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1; then
    say "no GPU present: nvidia-smi is not installed (no NVIDIA driver); nothing was run."
    exit 2
fi
if ! GPUS="$(timeout 20 nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)" || [ -z "$GPUS" ]; then
    say "no GPU present: nvidia-smi finds no usable device; nothing was run."
    exit 2
fi
say "GPU(s): $(echo "$GPUS" | paste -sd ';' -)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/evolve-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)

# ---- 1. install ------------------------------------------------------------------------------------------------------
if [ "${SKIP_INSTALL:-0}" != "1" ]; then
    say "installing the GPU extras (cupy-cuda12x, NVRTC, CUDA headers, nvdisasm)..."
    if ! "$PYTHON" -m pip install -q -e ".[gpu,cuda-tools,test]" >"$WORK/pip.log" 2>&1; then
        tail -20 "$WORK/pip.log"
        say "setup failed: pip install -e \".[gpu,cuda-tools,test]\" did not succeed (log above)."
        exit 3
    fi
fi
if ! "$PYTHON" -c "import cupy, sys; sys.exit(0 if cupy.cuda.runtime.getDeviceCount() > 0 else 1)" \
        >"$WORK/cupy.log" 2>&1; then
    tail -5 "$WORK/cupy.log"
    say "setup failed: CuPy cannot use the GPU (driver too old for cupy-cuda12x? CUDA_VISIBLE_DEVICES?)."
    exit 3
fi

# ---- 2. the gpu-marked tests ----------------------------------------------------------------------------------------
say "running the gpu-marked tests..."
EVOLVE_LADDER_REPORT="$WORK/ladder.json" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider --timeout=600 \
    --junitxml="$WORK/tests.xml" tests >"$WORK/tests.log" 2>&1
TESTS_STATUS=$?
tail -15 "$WORK/tests.log"

# ---- 3. a short evolution on the GPU ----------------------------------------------------------------------------------
PROBLEM="$WORK/matmul"
cp -r problems/matmul "$PROBLEM"
if [ "${GPU_CHECK_FULL:-0}" != "1" ]; then
    "$PYTHON" - "$PROBLEM/settings.toml" <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r"(?m)^bench_shapes = .*$", "bench_shapes = [[2048, 2048, 2048], [1024, 3072, 1536]]", text)
text = re.sub(r"(?m)^flush_mb = \d+", "flush_mb = 128", text)
open(path, "w").write(text)
EOF
fi
say "running evolve run problems/matmul --mutator tune --iterations 20..."
"$PYTHON" -m evolve.cli run "$PROBLEM" --mutator tune --iterations 20 --run-dir "$WORK/run" --quiet \
    >"$WORK/run.log" 2>&1
RUN_STATUS=$?
tail -5 "$WORK/run.log"

# ---- 4. one summary ---------------------------------------------------------------------------------------------------
"$PYTHON" - "$WORK" "$TESTS_STATUS" "$RUN_STATUS" "$(( $(date +%s) - START ))" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

work, tests_status, run_status, seconds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print("=" * 72)
print(f"gpu_check summary ({seconds} s)")
try:
    suites = ET.parse(work / "tests.xml").getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    print(f"  gpu tests: {total - failed - skipped} passed, {failed} failed, {skipped} skipped")
except (OSError, ET.ParseError) as exc:
    print(f"  gpu tests: no report ({exc}); pytest exit status {tests_status}")
try:
    ladder = json.loads((work / "ladder.json").read_text())
    print("  ladder (settings.toml shapes), % of cuBLAS:")
    for rung, fraction in ladder.items():
        print(f"    {rung:<18} {100 * fraction:6.1f}")
except (OSError, ValueError):
    print("  ladder: not measured (its test failed or did not run)")
try:
    from evolve.archive import read_programs

    rows = read_programs(work / "run").table.to_pylist()
    scored = [r for r in rows if r.get("score") is not None]
    seed = next((r for r in rows if r.get("iteration") == 0), None)
    best = max(scored, key=lambda r: r["score"]) if scored else None
    ok = sum(1 for r in rows if r.get("status") == "ok")
    print(f"  evolve run: {len(rows)} programs, {ok} scored ok; seed {seed and seed.get('score')}, "
          f"best {best and best['score']} (cublas_fraction; program {best and best['program_id']})")
except Exception as exc:  # noqa: BLE001 - the summary reports whatever it can
    print(f"  evolve run: no archive to read ({exc}); exit status {run_status}")
verdict = "PASS" if tests_status == 0 and run_status == 0 else "FAIL"
print(f"  verdict: {verdict}")
print("=" * 72)
EOF
if [ "$TESTS_STATUS" -ne 0 ] || [ "$RUN_STATUS" -ne 0 ]; then
    exit 1
fi
exit 0

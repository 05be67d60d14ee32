#!/usr/bin/env bash
# Prove the CUDA paths on a machine with a GPU, in one command, and print one table.
#
# Usage: tools/gpu_check.sh [--dry-run] [--out DIR] [--wheels DIR]
#
#   (no option)   on a GPU machine: install what is missing, run the `cuda` tests against the
#                 GPU, then benchmarks/bench_gpu.py (CPU and CUDA side by side, full sizes),
#                 then one thread against the app's threads per CPU job (bench_gui_volume.py
#                 --threads: the many-core figure of issue 13).
#   --dry-run     the same on the CPU with tiny sizes (the CPU stands in for the GPU); CI runs
#                 this so the script and the tests never rot.
#   --out DIR     where results go (default gpu_check_results/): results.md (the table, the test
#                 summary and the peak GPU memory the tests recorded), bench.json, tests.log.
#   --wheels DIR  offline install: pip-installs the wheels in DIR (--no-index --no-deps) instead
#                 of reaching a package index; tools/gpu_wheels.sh downloads the ones a stock
#                 CUDA PyTorch image lacks.
#
# On a bare machine with network access it installs a CUDA build of torch when the python
# has none, then the project with its test extras. Budget: under 8 minutes on one H100/H200.
set -uo pipefail
cd "$(dirname "$0")/.."

dry_run=0
out=gpu_check_results
wheels=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --out) out="$2"; shift ;;
        --wheels) wheels="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

PY=${PYTHON:-python3}
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=offscreen
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out=$(mkdir -p "$out" && cd "$out" && pwd)
start=$(date +%s)
step() { echo "== $(( $(date +%s) - start )) s: $*"; }

# 1. What it needs.
step "install"
has_cuda() { "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
if [ -n "$wheels" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile "$wheels"/*.whl || exit 1
elif [ "$dry_run" = 0 ]; then
    if ! has_cuda; then
        # A CUDA build of torch (the default PyPI wheel for Linux is built with CUDA).
        "$PY" -m pip install -q "torch>=2.2" || { echo "gpu_check: cannot install torch" >&2; exit 1; }
    fi
    "$PY" -m pip install -q -e ".[test]" || { echo "gpu_check: cannot install the project" >&2; exit 1; }
fi
if [ "$dry_run" = 0 ] && ! has_cuda; then
    echo "gpu_check: torch sees no CUDA device; use --dry-run to check the script on a CPU" >&2
    exit 1
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" | tee "$out/device.txt"

# 2. The `cuda` tests (the CPU stands in for the GPU in a dry run).
step "cuda tests"
record="$out/recorded.jsonl"
: >"$record"
if [ "$dry_run" = 1 ]; then export SEGBENCH_CUDA_DRY_RUN=1; fi
SEGBENCH_GPU_RECORD="$record" "$PY" -m pytest -q -m cuda tests/cuda -p no:cacheprovider \
    2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}

# 3. The benchmarks, CPU and device side by side.
step "benchmarks"
if [ "$dry_run" = 1 ]; then bench=(--device cpu --tiny); else bench=(--device cuda); fi
"$PY" benchmarks/bench_gpu.py "${bench[@]}" --out "$out/bench.md" --json "$out/bench.json"
bench_rc=$?

# 4. Threads on a many-core machine (issue 13): each job on one thread against the app's
# default (torch's threads less one), under the app's and OpenMP's default settings.
step "threads"
if [ "$dry_run" = 1 ]; then shape=64,64,16; else shape=512,512,150; fi
"$PY" benchmarks/bench_gui_volume.py --threads --shape "$shape" --cache "$(mktemp -d)" \
    2>&1 | tee "$out/threads.log"
threads_rc=${PIPESTATUS[0]}

# 5. One file with everything.
{
    echo "# gpu_check $(date -u +%Y-%m-%d) ($([ "$dry_run" = 1 ] && echo "dry run on the CPU" || echo "GPU run"))"
    echo
    cat "$out/device.txt"
    echo
    [ -f "$out/bench.md" ] && cat "$out/bench.md"
    echo
    echo "cuda tests: $(tail -n 1 "$out/tests.log")"
    echo
    echo "Threads (CPU jobs, wall and CPU seconds):"
    echo '```'
    sed -n '/^job /,$p' "$out/threads.log"
    echo '```'
    if [ -s "$record" ]; then
        echo
        echo "Figures the tests recorded:"
        "$PY" -c "import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line); print(f\"- {r['name']}: {r['value']:.3g} {r['unit']}\")" "$record"
    fi
} >"$out/results.md"
step "done"
cat "$out/results.md"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ] && [ "$threads_rc" = 0 ]

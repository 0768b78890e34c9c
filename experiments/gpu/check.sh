#!/usr/bin/env bash
# The GPU path in one run: CUDA tests, the CUDA benches, five minutes of the Bible demo model.
#
#     bash experiments/gpu/check.sh            # on a CUDA machine: at most about 10 minutes
#     bash experiments/gpu/check.sh            # on a CPU: the fused kernel under TRITON_INTERPRET=1,
#                                              # every CUDA-only part says "skipped"
#
# Run from anywhere; PYTHON picks the interpreter (default: .venv/bin/python, else python3).
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
MINUTES=${DEMO_MINUTES:-5}
status=0

section() { echo; echo "== $1 ($(date -u +%H:%M:%S) UTC)"; }
run() { "$@" || { status=1; echo "FAILED: $*"; }; }

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$PY" -c "import torch; print('CUDA device:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
    section "CUDA tests: fused kernel vs float64 (fp32, bf16, d = 24/384/768), streaming op, training step, generation"
    run "$PY" -m pytest -q -rs tests/test_fused_vocab_attention.py tests/test_cuda.py
    section "CUDA benches: vocabulary op and training step, with the allocator's peak memory"
    run timeout 240 "$PY" experiments/gpu/bench.py
    section "Bible demo model, ${MINUTES} minutes at a GPU batch"
    run timeout $(( MINUTES * 60 + 150 )) "$PY" experiments/gpu/demo_run.py --minutes "$MINUTES" --batch-size 256
else
    echo "no CUDA device: running the CPU part"
    section "fused kernel under Triton's interpreter (d = 24/384, fp32 and bf16)"
    if "$PY" -c "import triton" 2>/dev/null; then
        TRITON_INTERPRET=1 run "$PY" -m pytest -q -rs -m "not slow" tests/test_fused_vocab_attention.py
    else
        echo "skipped: triton is not installed (pip install triton, or the test extra)"
    fi
    section "CUDA tests"; echo "skipped: no CUDA device"
    run "$PY" -m pytest -q -rs tests/test_cuda.py
    section "CUDA benches"; run "$PY" experiments/gpu/bench.py
    section "Bible demo model at a GPU batch"; run "$PY" experiments/gpu/demo_run.py
fi
echo
[ "$status" = 0 ] && echo "check.sh: all parts passed or were skipped" || echo "check.sh: some parts FAILED"
exit "$status"

#!/usr/bin/env bash
# Create .venv-torchdistill/ at the repository root: torchdistill (PyPI) beside MONAI, for the `torchdistill` arms of
# scripts/bench_kd_speed.py (which runs them in this environment as a subprocess).
#
#   bash scripts/bench_venv.sh                     # create or update (idempotent: re-running checks and skips)
#   PYTHON=python3.11 VENV=/path/to/venv bash scripts/bench_venv.sh
#
# Why a separate environment: torchdistill 1.1.5 needs torchvision>=0.27, and PyPI's torchvision does not load beside
# the project's torch 2.13.0 CPU wheel ('operator torchvision::nms does not exist'). On this machine pip on Python 3.11
# takes torch==2.14.1 and torchvision==0.29.1 from the local wheel index (a CUDA build, ~5.5 GB in the venv, it runs
# on the CPU), so the pair is installed together here.
#
# What goes in:
#   torch==2.14.1 torchvision==0.29.1   the matched pair (local wheels; large, once)
#   torchdistill==1.1.5                 the newest release, the `torchdistill` arm (teacher live on every batch:
#                                       1.1.5 removed the `cache_output` data-loader key, it is ignored there)
#   torchdistill==1.1.4 (--target)      pure Python, in $VENV/torchdistill-1.1.4, put first on PYTHONPATH by the
#                                       benchmark for the `torchdistill_cache_output` arm (the last release whose
#                                       `cache_output` key writes and reads per-sample teacher-output files)
#   monai==1.6.1 nibabel                the bundles' networks and the BraTS slices (monai_kd itself comes from the
#                                       repository through PYTHONPATH, so the venv always runs the checkout's code)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv-torchdistill}"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
TD_PIN="torchdistill==1.1.5"
TD_CACHE_PIN="torchdistill==1.1.4"

NAME="bench_venv.sh"
# shellcheck source=scripts/venv_common.sh
source "$ROOT/scripts/venv_common.sh"
venv_create "the local $TORCH_PIN wheels"

CONSTRAINTS="$VENV/bench-constraints.txt"
printf '%s\n' "$TORCH_PIN" "$TORCHVISION_PIN" "monai==1.6.1" > "$CONSTRAINTS"

step "pip install $TORCH_PIN $TORCHVISION_PIN (from the local wheel index; large, once)"
"${PIP[@]}" install "$TORCH_PIN" "$TORCHVISION_PIN"

step "pip install $TD_PIN monai==1.6.1 nibabel (torch pinned by $CONSTRAINTS)"
"${PIP[@]}" install -c "$CONSTRAINTS" "$TD_PIN" "monai==1.6.1" nibabel numpy pyyaml scipy

step "pip install --no-deps --target $VENV/torchdistill-1.1.4 $TD_CACHE_PIN (the cache_output arm)"
if [[ ! -f "$VENV/torchdistill-1.1.4/torchdistill/__init__.py" ]]; then
    "${PIP[@]}" install --no-deps --target "$VENV/torchdistill-1.1.4" "$TD_CACHE_PIN"
fi

step "checking the environment"
"$VENV/bin/python" - <<'PY'
import sys
import monai, torch, torchvision, torchdistill
import torchdistill.core.distillation  # noqa: F401  (imports torchvision models: fails on a mismatched pair)
assert torchdistill.__version__ == "1.1.5", torchdistill.__version__
print(f"python {sys.version.split()[0]}; torch {torch.__version__}; torchvision {torchvision.__version__}; "
      f"monai {monai.__version__}; torchdistill {torchdistill.__version__}")
PY
PYTHONPATH="$VENV/torchdistill-1.1.4" "$VENV/bin/python" -c \
    'import torchdistill, torchdistill.core.distillation; assert torchdistill.__version__ == "1.1.4", torchdistill.__version__; print("torchdistill", torchdistill.__version__, "(cache_output arm)")'
step "done: $VENV"
echo "next: OMP_NUM_THREADS=1 python scripts/bench_kd_speed.py --torchdistill-python $VENV/bin/python"

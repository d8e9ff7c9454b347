#!/usr/bin/env bash
# Create .venv-monailabel/ at the repository root: MONAI Label 0.8.5 beside monai_kd, kept apart from the
# project's main environment (MONAI Label needs pydicom<3, torchvision and its own torch).
#
#   bash scripts/monailabel/setup_venv.sh          # create or update (idempotent: re-running checks and skips)
#   PYTHON=python3.11 bash scripts/monailabel/setup_venv.sh
#
# What goes in (and why):
#   torch==2.14.1 torchvision==0.29.1  pip takes both from this machine's local wheel index (Python 3.11, x86_64);
#                                      PyPI's torchvision does not load beside the 2.13.0 CPU wheel.
#   monailabel==0.8.5 (--no-deps)      its own requirements are installed next, except `sam2` (an sdist whose
#                                      build pulls a CUDA toolchain; MONAI Label uses it only for the optional
#                                      SAM2 infer tasks, which we switch off with `--conf sam2 false`) and the
#                                      monai extras MONAI Label never imports (mlflow, openslide, lmdb, gdown).
#   monai==1.6.1, pytorch-ignite==0.5.5 the versions monai_kd's bundles are written and tested for.
#   pydicom<3                           MONAI Label 0.8.5 reads DICOM with the pydicom 2 API.
#   monai_kd (-e ., --no-deps)          + what `import monai_kd` and the bundles need (nibabel, fire, tqdm, ...),
#                                      pinned by a constraints file so nothing replaces torch.
# The DICOM SEG/SR writers of monai_kd (highdicom>=0.28 needs pydicom 3) are NOT installed here: use
# `monai-kd infer-dicom` from the main environment for those.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv-monailabel"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
MONAILABEL_PIN="monailabel==0.8.5"

NAME="setup_venv.sh"
# shellcheck source=scripts/venv_common.sh
source "$ROOT/scripts/venv_common.sh"
venv_create "the local torch $TORCH_PIN wheels"

# Everything after torch is installed under this constraints file, so no later step can swap torch.
CONSTRAINTS="$VENV/monai_kd-constraints.txt"
cat > "$CONSTRAINTS" <<CONSTRAINTS_EOF
$TORCH_PIN
$TORCHVISION_PIN
monai==1.6.1
pytorch-ignite==0.5.5
pydicom<3
CONSTRAINTS_EOF

step "pip install $TORCH_PIN $TORCHVISION_PIN (from the local wheel index; large, once)"
"${PIP[@]}" install "$TORCH_PIN" "$TORCHVISION_PIN"

step "pip install --no-deps $MONAILABEL_PIN"
"${PIP[@]}" install --no-deps "$MONAILABEL_PIN"

step "pip install MONAI Label's requirements (without sam2) and pydicom<3"
"${PIP[@]}" install -c "$CONSTRAINTS" \
    "monai[fire,ignite,itk,nibabel,pillow,psutil,skimage,tensorboard,torchvision,tqdm]==1.6.1" \
    "uvicorn>=0.29.0" "pydantic>=2.7.0" "pydantic-settings>=2.2.1" "python-dotenv>=1.0.1" "fastapi>=0.110.2" \
    "python-multipart>=0.0.9" "httpx>=0.27.0" "schedule>=1.2.1" "dicomweb-client[gcp]>=0.59.1" \
    "timeloop>=1.0.2" "expiringdict>=1.2.2" "expiring_dict>=1.1.0" "cachetools>=5.3.3" "watchdog>=4.0.0" \
    "pydicom>=2.4.4,<3" "pydicom-seg>=0.4.1" "pynetdicom>=2.0.2" "pynrrd>=1.0.0" "numpymaxflow>=0.0.7" \
    "girder-client>=3.2.3" "ninja>=1.11.1.1" "einops>=0.7.0" "pyyaml>=6.0.1" "filelock>=3.11.0" \
    "passlib>=1.7.4" "pyjwt>=2.8.0" "bcrypt>=4.1.2" "shapely>=2.0.4" "requests>=2.31.0" \
    "requests-toolbelt>=1.0.0" "urllib3>=2.2.1" scikit-learn scipy "google-auth>=2.29.0"

step "pip install -e $ROOT --no-deps (monai_kd) + what it needs at import"
"${PIP[@]}" install -c "$CONSTRAINTS" "pytorch-ignite==0.5.5" numpy nibabel fire tqdm tensorboard jsonschema pillow pytest
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"

step "checking the environment"
"$VENV/bin/python" - <<'PY'
import sys
import monai, monailabel, pydicom, torch, torchvision
import monai_kd
from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: F401
from monailabel.tasks.train.bundle import BundleTrainTask  # noqa: F401
assert int(pydicom.__version__.split(".")[0]) < 3, pydicom.__version__
print(f"python {sys.version.split()[0]}; torch {torch.__version__}; torchvision {torchvision.__version__}; "
      f"monai {monai.__version__}; monailabel {monailabel.__version__}; pydicom {pydicom.__version__}; "
      f"monai_kd {monai_kd.__version__}")
PY
[[ -x "$VENV/bin/monailabel" ]] || fail "$VENV/bin/monailabel was not installed"
APPS="$("$VENV/bin/python" -c 'import os, sys; print(os.path.join(sys.prefix, "monailabel", "sample-apps"))')"
[[ -f "$APPS/monaibundle/main.py" ]] || fail "MONAI Label's sample app $APPS/monaibundle is missing"
step "done: $VENV (sample apps in $APPS)"
echo "next: $VENV/bin/python scripts/monailabel/check_server.py"

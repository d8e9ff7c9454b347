#!/usr/bin/env bash
# Create .venv-deploy/ at the repository root: the MONAI Deploy App SDK beside monai_kd, kept apart from the
# project's main environment (the SDK installs into the `monai` namespace, `monai/deploy/`, and pulls Holoscan).
#
#   bash scripts/deploy/setup_venv.sh              # create or update (idempotent)
#   PYTHON=python3.11 SDK_VERSION=3.5.0 bash scripts/deploy/setup_venv.sh
#
# What goes in:
#   torch==2.13.0                  the CPU wheel that lies on this machine's disk (pip takes it; no CUDA build)
#   monai_kd (-e .) + its deps     monai 1.6.1, highdicom, pylibjpeg, pylibjpeg-openjpeg (JPEG 2000 CT), ...
#   monai-deploy-app-sdk==$SDK_VERSION  with Holoscan (holoscan-cu13 for SDK 4.x, holoscan-cu12 for 3.x),
#                                  installed under a constraints file so torch and monai stay as they are.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv-deploy"
PYTHON="${PYTHON:-python3}"
SDK_VERSION="${SDK_VERSION:-4.0.0}"
TORCH_PIN="torch==2.13.0"

NAME="setup_venv.sh"
# shellcheck source=scripts/venv_common.sh
source "$ROOT/scripts/venv_common.sh"
venv_create "the local $TORCH_PIN wheel"

CONSTRAINTS="$VENV/monai_kd-constraints.txt"
printf '%s\n' "$TORCH_PIN" "monai==1.6.1" "pytorch-ignite==0.5.5" > "$CONSTRAINTS"

step "pip install $TORCH_PIN -e $ROOT (monai_kd with its dependencies, as in the README)"
"${PIP[@]}" install -c "$CONSTRAINTS" "$TORCH_PIN" -e "$ROOT" pytest

step "pip install monai-deploy-app-sdk==$SDK_VERSION highdicom pylibjpeg pylibjpeg-openjpeg"
"${PIP[@]}" install -c "$CONSTRAINTS" "monai-deploy-app-sdk==$SDK_VERSION" highdicom pylibjpeg pylibjpeg-openjpeg

step "checking the environment"
"$VENV/bin/python" - <<'PY'
import sys
import highdicom, monai, pydicom, torch
import monai_kd
import monai.deploy
from monai.deploy.core import Application  # noqa: F401  (imports Holoscan)
from monai.deploy.operators import DICOMSegmentationWriterOperator, MonaiBundleInferenceOperator  # noqa: F401
import holoscan
print(f"python {sys.version.split()[0]}; torch {torch.__version__}; monai {monai.__version__}; "
      f"monai-deploy-app-sdk {monai.deploy.__version__}; holoscan {holoscan.__version__}; "
      f"highdicom {highdicom.__version__}; pydicom {pydicom.__version__}; monai_kd {monai_kd.__version__}")
PY
step "done: $VENV"
echo "next: bash scripts/deploy/run_ct_example.sh"

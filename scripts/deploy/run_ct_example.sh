#!/usr/bin/env bash
# Run the MONAI Deploy example application (scripts/deploy/app.py) on the real CT series.
#
#   bash scripts/deploy/run_ct_example.sh [OUT_DIR]            # default OUT_DIR: /tmp/monai_kd-deploy-ct
#   BUNDLE=bundles/kdml_seg CKPT=path/to/model.pt bash scripts/deploy/run_ct_example.sh /tmp/out
#
# 1. exports the bundle's student to OUT_DIR/model/model.ts with `monai-kd export` (configs embedded); weights:
#    $CKPT, else BUNDLE/models/model.pt, else a freshly initialised network_def (seed 0; a wiring run);
# 2. runs the app on ../shared/data/totalsegmentator-examples/example_ct_dicom (JPEG 2000, 20 slices), series
#    selected by --modality CT, writing into OUT_DIR/output (outside the repository and the input);
# 3. lists the outputs, prints the JSON result (classification) and runs dciodvfy on the DICOM files if present.
# Needs .venv-deploy (bash scripts/deploy/setup_venv.sh). Nothing is written into bundles/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="$ROOT/.venv-deploy/bin/python"
OUT="$(mkdir -p "${1:-/tmp/monai_kd-deploy-ct}" && cd "${1:-/tmp/monai_kd-deploy-ct}" && pwd)"
BUNDLE="${BUNDLE:-$ROOT/bundles/kd}"
CT="${CT:-$ROOT/../shared/data/totalsegmentator-examples/example_ct_dicom}"

fail() { printf 'run_ct_example.sh: FAILED: %s\n' "$*" >&2; exit 1; }
[[ -x "$PY" ]] || fail "$PY not found: create it with bash scripts/deploy/setup_venv.sh"
[[ -d "$CT" ]] || fail "CT series not found: $CT"
[[ -f "$BUNDLE/configs/metadata.json" ]] || fail "not a bundle: $BUNDLE"
case "$OUT/" in "$ROOT"/*) fail "OUT_DIR must be outside the repository: $OUT";; esac

CKPT="${CKPT:-$BUNDLE/models/model.pt}"
NAME="$(basename "$BUNDLE")"
MODEL_DIR="$OUT/model/$NAME"  # the app names its outputs after the model's folder when metadata has no name
mkdir -p "$MODEL_DIR"
if [[ ! -f "$CKPT" ]]; then
    echo "==> no weights at $CKPT: exporting a freshly initialised network_def (seed 0)"
    CKPT="$MODEL_DIR/fresh_model.pt"
    "$PY" - "$BUNDLE" "$CKPT" <<'PY'
import sys, torch
from monai.bundle import ConfigParser
bundle, out = sys.argv[1:]
parser = ConfigParser(); parser.read_config(f"{bundle}/configs/inference.json"); parser["bundle_root"] = bundle
torch.manual_seed(0)
torch.save(parser.get_parsed_content("network_def").state_dict(), out)
PY
fi

echo "==> monai-kd export $BUNDLE --ckpt_file $CKPT --output_dir $MODEL_DIR --onnx False"
(cd "$ROOT" && "$ROOT/.venv-deploy/bin/monai-kd" export "$BUNDLE" --ckpt_file "$CKPT" --output_dir "$MODEL_DIR" --onnx False)

rm -rf "$OUT/output" && mkdir -p "$OUT/output"
echo "==> python scripts/deploy/app.py -i $CT -o $OUT/output -m $MODEL_DIR/model.ts --modality CT"
start=$(date +%s%N)
(cd "$OUT" && "$PY" "$ROOT/scripts/deploy/app.py" -i "$CT" -o "$OUT/output" -m "$MODEL_DIR/model.ts" \
    --modality CT --timings "$OUT/timings.json" -w "$OUT/workdir")
end=$(date +%s%N)
printf '==> app finished in %d ms (process wall time); stage seconds: %s\n' "$(( (end - start) / 1000000 ))" \
    "$(tr -d '\n ' < "$OUT/timings.json")"

echo "==> outputs in $OUT/output"
ls -l "$OUT/output"
shopt -s nullglob
for f in "$OUT"/output/*.json; do echo "--- $f"; cat "$f"; echo; done
dcm=("$OUT"/output/*.dcm)
[[ ${#dcm[@]} -gt 0 ]] || fail "no DICOM output written"
"$PY" - "${dcm[@]}" <<'PY'
import sys, pydicom
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path)
    extra = f", {int(ds.NumberOfFrames)} frames, segments {[s.SegmentLabel for s in ds.SegmentSequence]}" if ds.Modality == "SEG" else ""
    refs = ds.get("ReferencedSeriesSequence") or ds.get("CurrentRequestedProcedureEvidenceSequence") or []
    print(f"{path}: {ds.Modality} {ds.SOPClassUID.name}, SeriesDescription '{ds.get('SeriesDescription', '')}'{extra}")
PY
if command -v dciodvfy >/dev/null; then
    for f in "${dcm[@]}"; do
        errors=$(dciodvfy "$f" 2>&1 | grep -c '^Error' || true)
        echo "dciodvfy $(basename "$f"): $errors error(s)"
    done
fi
echo "==> done: $OUT/output"

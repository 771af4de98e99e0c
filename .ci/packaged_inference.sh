#!/usr/bin/env bash
# The wheel `kedro package` builds, installed into a fresh virtual environment from the lock file (no editable
# install, no src/ on the path), runs the inference pipeline with the packaged conf on the demo's model.
# Run from the project root after `make run`.
set -euo pipefail
shopt -s nullglob
ROOT="$(pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
rm -rf dist
KEDRO_DISABLE_TELEMETRY=true .venv/bin/kedro package
WHEEL="$(ls dist/cardio_kedro-*.whl)"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q --require-hashes -r requirements.lock
"$WORK/venv/bin/python" -m pip install -q --no-deps "$WHEEL"
# a folder that is not the project: the packaged conf, the demo's data and MLflow store beside it
mkdir "$WORK/run"
cd "$WORK/run"
ln -s "$ROOT/data" data
cp "$ROOT/mlflow.db" mlflow.db
"$WORK/venv/bin/python" - <<'PY'
import cardio_kedro
assert "site-packages" in cardio_kedro.__file__, cardio_kedro.__file__
print("cardio_kedro from", cardio_kedro.__file__)
PY
IMAGES="$ROOT/data/01_raw/phantom/images_001/images"
test -d "$IMAGES" || { echo "no demo cohort at $IMAGES: run make run first" >&2; exit 1; }
before=("$ROOT"/data/07_model_output/inference_predictions.csv/*)
KEDRO_DISABLE_TELEMETRY=true "$WORK/venv/bin/python" -m cardio_kedro \
  --conf-source="$ROOT/dist/conf-cardio_kedro.tar.gz" --pipelines=inference --params="images_dir=$IMAGES"
after=("$ROOT"/data/07_model_output/inference_predictions.csv/*)
test "${#after[@]}" -gt "${#before[@]}" || { echo "the packaged inference run wrote no predictions" >&2; exit 1; }
newest="${after[-1]}/inference_predictions.csv"
rows="$(($(wc -l < "$newest") - 1))"
echo "packaged inference: $rows films scored ($newest)"
test "$rows" -gt 0

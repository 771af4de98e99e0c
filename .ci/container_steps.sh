#!/usr/bin/env bash
# The container image's steps without a container (containers cannot run on the CI machines): the wheel and the
# packaged conf that `kedro package` builds, installed by docker/install.sh (what the Dockerfile runs) into a clean
# virtual environment; then, in an empty folder as the image's /work, the demo (a small one) and the inference
# pipeline on its films, both from the wheel with the packaged conf. Run from the project root.
set -euo pipefail
shopt -s nullglob
ROOT="$(pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
rm -rf dist
KEDRO_DISABLE_TELEMETRY=true .venv/bin/kedro package
# the image's build folder: the lock files, the script and dist/ (Dockerfile: COPY ... /tmp/build)
mkdir "$WORK/build"
cp requirements.lock requirements-gpu.lock "$WORK/build/"
cp -r docker dist "$WORK/build/"
(cd "$WORK/build" && bash docker/install.sh "$WORK/venv" "$WORK/opt" requirements.lock)
PY="$WORK/venv/bin/python"
CONF="$WORK/opt/conf-cardio_kedro.tar.gz"
# the image's /work: nothing but what the runs write
mkdir "$WORK/work"
cd "$WORK/work"
SMALL="image_size=32,phantoms.n_patients=90,model_training.head.epochs=1,model_training.fine_tune.epochs=1"
SMALL="$SMALL,model_training.model.backbone_width=0.125,reporting.n_bootstrap=50"
KEDRO_DISABLE_TELEMETRY=true "$PY" -m cardio_kedro --conf-source="$CONF" --pipelines=demo --params="$SMALL"
models=(data/06_models/classifier.keras/*/classifier.keras)
test "${#models[@]}" -eq 1 || { echo "the packaged demo saved no model" >&2; exit 1; }
IMAGES="data/01_raw/phantom/images_001/images"
KEDRO_DISABLE_TELEMETRY=true "$PY" -m cardio_kedro --conf-source="$CONF" --pipelines=inference \
  --params="image_size=32,images_dir=$IMAGES"
predictions=(data/07_model_output/inference_predictions.csv/*/inference_predictions.csv)
test "${#predictions[@]}" -eq 1 || { echo "the packaged inference run wrote no predictions" >&2; exit 1; }
rows="$(($(wc -l < "${predictions[0]}") - 1))"
echo "container steps: the wheel's demo trained ${models[0]}; its inference scored $rows films"
test "$rows" -gt 0
"$PY" - <<'PY'
from mlflow import MlflowClient

client = MlflowClient("sqlite:///mlflow.db")
version = client.get_model_version_by_alias("Cardiomegaly-classifier", "candidate").version
print(f"container steps: Cardiomegaly-classifier/{version} is @candidate in the run folder's mlflow.db")
PY

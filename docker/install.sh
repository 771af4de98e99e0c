#!/usr/bin/env bash
# The container image's steps, in one script: the Dockerfile runs it, and CI runs it into a clean virtual
# environment (.ci/container_steps.sh), since containers cannot run on the CI machines.
#
#   docker/install.sh VENV CONF_DIR [LOCK]
#     VENV      the virtual environment to create (the image: /opt/venv)
#     CONF_DIR  where the packaged conf goes (the image: /opt/cardio)
#     LOCK      requirements.lock (CPU, the default) or requirements-gpu.lock (NVIDIA GPUs: JAX with CUDA 12)
#
# Run from a folder holding the lock files and dist/ (cardio_kedro-*.whl and conf-cardio_kedro.tar.gz, from
# `make package`). Nothing from the source tree is installed but the wheel.
set -euo pipefail
VENV="${1:?usage: docker/install.sh VENV CONF_DIR [LOCK]}"
CONF="${2:?usage: docker/install.sh VENV CONF_DIR [LOCK]}"
LOCK="${3:-requirements.lock}"
shopt -s nullglob
WHEELS=(dist/cardio_kedro-*.whl)
if [ "${#WHEELS[@]}" -ne 1 ] || [ ! -f dist/conf-cardio_kedro.tar.gz ]; then
  echo "docker/install.sh: needs one dist/cardio_kedro-*.whl and dist/conf-cardio_kedro.tar.gz: run 'make package'" >&2
  exit 1
fi
test -f "$LOCK" || { echo "docker/install.sh: no lock file $LOCK here" >&2; exit 1; }
python3 -m venv "$VENV"
# the pip a new venv brings (Python 3.11's) refuses the lock's extras (uvicorn[standard]) under --require-hashes
"$VENV/bin/python" -m pip install -q --no-cache-dir --upgrade pip
"$VENV/bin/python" -m pip install -q --no-cache-dir --require-hashes -r "$LOCK"
"$VENV/bin/python" -m pip install -q --no-cache-dir --no-deps "${WHEELS[0]}"
mkdir -p "$CONF"
cp dist/conf-cardio_kedro.tar.gz "$CONF/"
"$VENV/bin/python" - <<'PY'
import cardio_kedro

assert "site-packages" in cardio_kedro.__file__, cardio_kedro.__file__
print("docker/install.sh: cardio_kedro installed from", cardio_kedro.__file__)
PY

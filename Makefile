# Two commands do everything: `make run` (set up + train the demo) and `make test` (set up + lint + tests).
# `make test-fast` runs the fast tier only.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
export KEDRO_DISABLE_TELEMETRY := true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: install install-gpu run run-multilabel run-gpu test test-fast lint viz mlflow-ui mlflow-server sweep clean-data lock weights phantom-backbone small-real package

# the exact, hash-checked versions of requirements.lock, then the package itself (editable, no deps)
$(BIN)/.installed: pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

install: $(BIN)/.installed

# an NVIDIA GPU (Linux x86-64): the same pins plus JAX with its CUDA 12 wheels (requirements-gpu.lock)
$(BIN)/.installed-gpu: pyproject.toml requirements-gpu.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements-gpu.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(BIN)/.installed $@

install-gpu: $(BIN)/.installed-gpu

# PARAMS: more --params for the run (make run PARAMS=model_training.fine_tune.epochs=5,image_size=32)
PARAMS ?=
comma := ,
run: install
	$(BIN)/kedro run --pipelines=training$(if $(PARAMS), --params=$(PARAMS))

# the multi-label demo: one model for the 14 NIH findings on phantoms that draw five of them (docs/multilabel.md)
run-multilabel: install
	$(BIN)/kedro run --env=multilabel --pipelines=multilabel$(if $(PARAMS), --params=$(PARAMS))

# train on a GPU with the JAX backend; stops at once if JAX sees no GPU (make run-gpu ENV=nih COHORT=/data/nih)
ENV ?= nih
COHORT ?=
run-gpu: install-gpu
	KERAS_BACKEND=jax $(BIN)/kedro run --pipelines=training --env=$(ENV) \
		--params=model_training.require_accelerator=true$(if $(COHORT),$(comma)cohort_dir=$(COHORT))$(if $(PARAMS),$(comma)$(PARAMS))

# the wheel and the packaged conf the Dockerfile installs (dist/)
package: install
	rm -rf dist
	KEDRO_DISABLE_TELEMETRY=true $(BIN)/kedro package

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

# two workers (pytest-xdist), each taking whole test files: module fixtures are built once
PYTEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# the fast tier: no Kedro session, server, browser or GPU smoke run (113 s measured on 2 cores)
test-fast: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

viz: install
	$(BIN)/kedro viz run --host 127.0.0.1 --port 4141

mlflow-ui: install
	$(BIN)/kedro mlflow ui  # the store and the address come from conf/base/mlflow.yml

# a team's tracking server to try out: PostgreSQL (runs, registry, sweeps) + proxied artifacts in data/team_server;
# runs go to it with MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) (docs/scaling_out.md). Ctrl-C stops it.
MLFLOW_PORT ?= 5000
PG_PORT ?= 5433
mlflow-server: install
	$(BIN)/python -m cardio_kedro.team.server --root data/team_server --port $(MLFLOW_PORT) --pg-port $(PG_PORT)

# one sweep worker (start it on as many machines as you like): conf/base/parameters_sweep.yml says what is searched;
# make sweep STORAGE=postgresql://postgres@host:5433/optuna [SWEEP_ENV=nih] [TRIALS=4] [PARAMS=cohort_dir=/data/nih]
STORAGE ?= $(CARDIO_SWEEP_STORAGE)
sweep: install
	$(BIN)/python -m cardio_kedro.team.sweep --storage "$(STORAGE)" $(if $(SWEEP_ENV),--env $(SWEEP_ENV)) \
		$(if $(TRIALS),--trials $(TRIALS)) $(if $(PARAMS),--params "$(PARAMS)")

# refresh requirements.lock from pyproject.toml's ranges (then `make test` before committing it)
lock: install
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 \
		--custom-compile-command "make lock" -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra gpu --extra test --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -o requirements-gpu.lock

# a small real cohort (a few hundred to a few thousand films) cross-validated with conf/small_real, which starts
# from the phantom demo's backbone (trained once, on synthetic films only): make small-real COHORT=/data/my_cohort
PHANTOM_BACKBONE := data/06_models/phantom_backbone.weights.h5
$(PHANTOM_BACKBONE): | install
	$(BIN)/kedro run --pipelines=demo$(if $(PARAMS), --params=$(PARAMS))
	$(BIN)/python -m cardio_kedro.modeling.pretrained export \
		"$$(ls -d data/06_models/classifier.keras/*/classifier.keras | tail -n 1)" $(PHANTOM_BACKBONE)

phantom-backbone: $(PHANTOM_BACKBONE)

small-real: install $(PHANTOM_BACKBONE)
	@test -n "$(COHORT)" || { echo "usage: make small-real COHORT=/path/to/cohort (docs/cross_validation.md)"; exit 2; }
	$(BIN)/kedro run --pipelines=cross_validation --env=small_real --params=cohort_dir=$(COHORT)$(if $(PARAMS),$(comma)$(PARAMS))

# ImageNet weights into the Keras cache ahead of an offline run; prints the file (BACKBONE=vgg16 | densenet121 | ...)
BACKBONE ?= vgg16
weights: install
	$(BIN)/python -m cardio_kedro.modeling.pretrained $(BACKBONE)

clean-data:
	find data -mindepth 2 ! -name .gitkeep -delete 2>/dev/null || true
	rm -f mlflow.db

"""Sweeps: an Optuna study whose trials are training runs, one ``kedro run`` (so one MLflow run) each.

    python -m cardio_kedro.team.sweep --storage postgresql://host/optuna [--env nih] [--trials 4] [--params a=1]
    # or: make sweep STORAGE=postgresql://host/optuna

The search space, the objective and the study's name are in ``conf/<env>/parameters_sweep.yml``.
Start the same command on as many machines as you like: every worker joins the one study in the
database and draws its next trial from what all workers have measured so far. Each trial:

1. draws every dimension of ``sweep.space`` (Optuna's sampler);
2. runs ``kedro run --pipelines=model_training,reporting --params=<drawn values>`` with
   ``sweep.study`` and ``sweep.trial`` as tags of its MLflow run (filter a sweep in the UI:
   ``tags.`sweep.study` = '...'``); ``data_processing`` runs once per study and machine, before
   the first trial (the splits and the pixel cache do not change between trials);
3. reports the run's ``sweep.objective`` at its restored best epoch to the study (a validation
   metric; test metrics are refused);
4. gives the registry alias ``champion`` to the best trial's registered models, which inference
   (``model_uri=models:/<finding>-classifier@champion``) and serving accept.

A worker that dies (killed, machine lost) stops its heartbeat; the next worker to start a trial,
or ``--trials 0``, marks that trial failed in the study and its MLflow run ``FAILED``. A failed
training run fails its trial and the worker goes on with the next.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cardio_kedro.cohort.findings import findings_name
from cardio_kedro.config import SweepDimension, SweepParams, has_parameter, parse_runtime_params
from cardio_kedro.hooks.mlflow_tags import RUN_NAME_ENV, SWEEP_ENV

logger = logging.getLogger("cardio_kedro.team.sweep")
CHAMPION = "champion"
TRIAL_PIPELINES = "model_training,reporting"  # data_processing ran once for the study (prepare_data)


class TrialRunFailed(RuntimeError):
    """The trial's ``kedro run`` exited with an error (its log tail is in the message)."""


def load_sweep_params(project: Path, env: str | None, runtime_params: dict[str, Any]) -> tuple[SweepParams, str, str]:
    """The ``sweep`` group, the target finding and the MLflow tracking URI, from the project's conf as
    ``kedro run`` would merge it (``mlflow.yml``: ``MLFLOW_TRACKING_URI`` or the project's sqlite store),
    every parameter checked as before a run (a typo fails here, not in the first trial)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from cardio_kedro.config import ConfigSources, validate_parameters

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params) as session:
        context = session.load_context()
        params = validate_parameters(context.params, ConfigSources(project / "conf", env, "base", runtime_params))
        tracking_uri = _project_uri(context.config_loader["mlflow"]["server"]["mlflow_tracking_uri"], project)
    missing = [key for key in params.sweep.space if not has_parameter(context.params, key)]
    if missing:
        raise ValueError(
            f"sweep.space names {missing}, which are not parameters of the project "
            f"(conf/base/parameters_sweep.yml); use dotted keys such as model_training.fine_tune.learning_rate"
        )
    return params.sweep, findings_name(params.target_findings), tracking_uri


def _project_uri(uri: str, project: Path) -> str:
    """A relative sqlite store (``sqlite:///mlflow.db``: relative to the run's folder, the project) made absolute."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri.removeprefix(prefix)).is_absolute():
        return f"{prefix}{project / uri.removeprefix(prefix)}"
    return uri


def draw(trial, space: dict[str, SweepDimension]) -> dict[str, Any]:
    """One value per dimension of ``space``, drawn by the trial's sampler."""
    values = {}
    for key, dim in space.items():
        if dim.type == "categorical":
            values[key] = trial.suggest_categorical(key, dim.choices)
        elif dim.type == "int":
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            values[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return values


def params_argument(values: dict[str, Any], extra: str = "") -> str:
    """``--params`` text: ``extra`` (the worker's own, e.g. a cohort) and then the drawn values."""
    drawn = ",".join(f"{key}={value}" for key, value in values.items())
    return ",".join(part for part in (extra, drawn) if part)


# Starts the trial's ``kedro run`` so that it is killed when the worker dies, however it dies (Linux's
# PR_SET_PDEATHSIG survives exec); exits at once if the worker is already gone.
_LAUNCH = (
    "import ctypes, os, signal, sys\n"
    "try:\n    ctypes.CDLL('libc.so.6').prctl(1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n    sys.exit(137)\n"
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def _kedro_run(project: Path, env: str | None, params: str, log: Path, extra: list[str], environment: dict) -> None:
    """A ``kedro run`` of ``project`` that dies with this worker, its output in ``log``.

    The workers of one machine share the project, which takes one run at a time (hooks/run_lock.py): a
    worker waits here for the others' runs, so that its own run starts (and takes its timestamp, the
    version of what it saves) only when the project is free.
    """
    lock_path = project / "data" / ".sweeps" / "runs.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another worker's run on this machine to end (the project runs one at a time)")
            fcntl.flock(lock, fcntl.LOCK_EX)
        _launch(project, env, params, log, extra, environment)


def _launch(project: Path, env: str | None, params: str, log: Path, extra: list[str], environment: dict) -> None:
    kedro = str(Path(sys.executable).parent / "kedro")
    command = [sys.executable, "-c", _LAUNCH, str(os.getpid()), kedro, "run", *extra]
    command += [f"--params={params}"] if params else []
    command += [f"--env={env}"] if env else []
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=project, env=environment, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = process.wait()
        except BaseException:  # the worker is stopped (Ctrl-C, SIGTERM): stop the run too, and say so
            process.terminate()
            process.wait()
            raise
    if code:
        tail = log.read_text()[-2000:]
        raise TrialRunFailed(f"kedro run {' '.join(extra)} exited with {code}; log {log}:\n{tail}")


def prepare_data(project: Path, env: str | None, params: str, study: str, logs: Path) -> bool:
    """``data_processing`` once per study on this machine, before any trial; whether this worker ran it.

    Every trial trains on the same splits and pixel cache, so the workers of one machine share them:
    the first prepares them while the others wait on a file lock, then they find the study's marker.
    """
    marker = project / "data" / ".sweeps" / f"{study}.prepared"
    marker.parent.mkdir(parents=True, exist_ok=True)
    with (marker.parent / "prepare.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return False
        logger.info("preparing the data once for study %s (data_processing)", study)
        _kedro_run(
            project, env, params, logs / "data_processing.log", ["--pipelines=data_processing"], dict(os.environ)
        )
        marker.write_text(params)
        return True


def run_trial(project: Path, env: str | None, params: str, study: str, number: int, log: Path) -> None:
    """The trial's training and reporting (``kedro run --pipelines=model_training,reporting``)."""
    environment = {
        **os.environ,
        SWEEP_ENV["sweep.study"]: study,
        SWEEP_ENV["sweep.trial"]: str(number),
        RUN_NAME_ENV: f"{study} trial {number}",
    }
    try:
        _kedro_run(project, env, params, log, [f"--pipelines={TRIAL_PIPELINES}"], environment)
    except TrialRunFailed as failed:
        raise TrialRunFailed(f"trial {number}: {failed}") from None


def mlflow_run(client, experiment_id: str, study: str, number: int):
    """The MLflow run of trial ``number`` of ``study`` (by its tags), or ``None``."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`sweep.study` = '{study}' and tags.`sweep.trial` = '{number}'",
        max_results=1,
    )
    return runs[0] if runs else None


def objective_value(client, run, metric: str) -> float:
    """``metric`` of ``run`` at its restored best epoch (its last value when the run logs no best epoch)."""
    history = client.get_metric_history(run.info.run_id, metric)
    if not history:
        raise TrialRunFailed(f"run {run.info.run_id} logged no metric '{metric}' (sweep.objective)")
    best = run.data.metrics.get("best_epoch")
    at_best = [m.value for m in history if best is not None and m.step == int(best)]
    return at_best[0] if at_best else sorted(history, key=lambda m: (m.step, m.timestamp))[-1].value


def crown_champion(client, study, finding: str, experiment_id: str) -> int | None:
    """Give the alias ``champion`` to the registered models of the study's best trial; its number."""
    import optuna

    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return None
    best = study.best_trial
    run = mlflow_run(client, experiment_id, study.study_name, best.number)
    if run is None:
        return None
    for name in (f"{finding}-classifier", f"{finding}-classifier-service"):
        versions = client.search_model_versions(f"name='{name}' and run_id='{run.info.run_id}'")
        if versions:
            client.set_registered_model_alias(name, CHAMPION, versions[0].version)
    return best.number


def fail_runs_of_failed_trials(client, study, experiment_id: str) -> list[int]:
    """Mark ``FAILED`` the MLflow runs still ``RUNNING`` whose trial the study has marked failed."""
    import optuna

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run = mlflow_run(client, experiment_id, study.study_name, trial.number)
        if run is not None and run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FAILED")
            failed.append(trial.number)
    return failed


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--storage",
        default=os.environ.get("CARDIO_SWEEP_STORAGE"),
        help="the study's database, e.g. postgresql://postgres@host:5433/optuna (env CARDIO_SWEEP_STORAGE)",
    )
    parser.add_argument("--env", default=None, help="the Kedro environment of every trial (e.g. nih)")
    parser.add_argument("--trials", type=int, default=None, help="this worker's trials (default: trials_per_worker)")
    parser.add_argument("--params", default="", help="more --params for every trial, e.g. cohort_dir=/data/nih")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="the project folder (default: here)")
    args = parser.parse_args(argv)
    if not args.storage:
        parser.error("no study storage: pass --storage postgresql://... or set CARDIO_SWEEP_STORAGE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("kedro", "mlflow", "alembic", "kedro_mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return args


def _open_study(storage_url: str, config: SweepParams):
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):  # workers that start together on a new database race to create its tables
        try:
            storage = optuna.storages.RDBStorage(
                storage_url, heartbeat_interval=config.heartbeat_s, grace_period=2 * config.heartbeat_s
            )
            break
        except SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(1 + random.random())
    sampler = optuna.samplers.TPESampler() if config.sampler == "tpe" else optuna.samplers.RandomSampler()
    return optuna.create_study(
        study_name=config.study_name, storage=storage, direction=config.direction, sampler=sampler, load_if_exists=True
    )


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    signal.signal(signal.SIGTERM, _interrupt)

    import mlflow
    import optuna

    from cardio_kedro.hooks.mlflow_tags import create_experiment

    project = args.project.resolve()
    runtime = parse_runtime_params(args.params)
    config, finding, tracking_uri = load_sweep_params(project, args.env, runtime)
    trials = config.trials_per_worker if args.trials is None else args.trials
    create_experiment(tracking_uri, finding)
    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(finding).experiment_id
    study = _open_study(args.storage, config)
    logs = project / "data" / "08_reporting" / "sweep_logs" / config.study_name
    logs.mkdir(parents=True, exist_ok=True)
    prepare_data(project, args.env, args.params, config.study_name, logs)

    def objective(trial) -> float:
        values = draw(trial, config.space)
        started = time.perf_counter()
        logger.info("trial %d: %s", trial.number, values)
        log = logs / f"trial_{trial.number:04d}.log"
        run_trial(project, args.env, params_argument(values, args.params), config.study_name, trial.number, log)
        run = mlflow_run(client, experiment_id, config.study_name, trial.number)
        if run is None:
            raise TrialRunFailed(f"trial {trial.number}: no MLflow run tagged with it in experiment {finding}")
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        value = objective_value(client, run, config.objective)
        seconds = time.perf_counter() - started
        logger.info(
            "trial %d: %s %.4f in %.0f s (run %s)", trial.number, config.objective, value, seconds, run.info.run_id
        )
        return value

    def after_trial(study, trial) -> None:
        fail_runs_of_failed_trials(client, study, experiment_id)
        champion = crown_champion(client, study, finding, experiment_id)
        if champion is not None:
            logger.info("champion: trial %d (%s %.4f)", champion, config.objective, study.best_value)

    optuna.storages.fail_stale_trials(study)  # trials of workers that died (silent for 2 heartbeats)
    stale = fail_runs_of_failed_trials(client, study, experiment_id)
    if stale:
        logger.info("marked failed the MLflow runs of trials %s, whose workers stopped", stale)
    try:
        if trials:
            study.optimize(objective, n_trials=trials, catch=(TrialRunFailed,), callbacks=[after_trial])
    except KeyboardInterrupt:
        logger.info("stopped: the running trial is marked failed")
        fail_runs_of_failed_trials(client, study, experiment_id)
        return 130
    champion = crown_champion(client, study, finding, experiment_id)
    done = study.get_trials(deepcopy=False)
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    logger.info(
        "study %s: %d trial(s), %d complete; champion trial %s", config.study_name, len(done), complete, champion
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

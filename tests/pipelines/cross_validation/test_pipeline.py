"""The cross_validation pipeline's shape: one namespace per fold from the run's configuration, the pool after
them, its outputs apart from the training pipeline's, and a run whose folds differ from the pipeline's refused."""

from pathlib import Path

import pytest
import yaml

from cardio_kedro.config import ParameterError, RunConf, record_run_conf, run_conf
from cardio_kedro.hooks.preflight import check_folds_match_pipeline
from cardio_kedro.pipelines.cross_validation.pipeline import configured_folds, create_pipeline
from tests.helpers import PROJECT_ROOT, registered_pipelines


def _fold_groups(pipeline) -> list[str]:
    return sorted({n.namespace for n in pipeline.nodes if (n.namespace or "").startswith("cross_validation.fold_")})


@pytest.mark.parametrize("n_folds", [3, 5])
def test_each_fold_is_a_namespace_the_pool_reads(n_folds):
    pipeline = create_pipeline(n_folds=n_folds)
    groups = _fold_groups(pipeline)
    assert groups == [f"cross_validation.fold_{k}" for k in range(1, n_folds + 1)]
    pool = next(n for n in pipeline.nodes if n.name == "cross_validation.pool_out_of_fold")
    folds = [n for n in pipeline.nodes if n.name.endswith(".train_fold_model")]
    assert len(folds) == n_folds
    for node in folds:  # every fold's outputs reach the pool; the folds read only the folds table and the cache
        assert set(node.outputs) <= set(pool.inputs)
        assert {i for i in node.inputs if not i.startswith("params:")} == {"cross_validation.folds", "pixel_cache"}
    # the pool runs after every fold, the final model needs none of them (a runner may run it beside them)
    order = [n.name for n in pipeline.nodes]
    assert all(order.index(node.name) < order.index(pool.name) for node in folds)
    final = next(n for n in pipeline.nodes if n.name == "cross_validation.train_final_model")
    assert not set(final.inputs) & {o for node in folds for o in node.outputs}


def test_the_fold_count_comes_from_the_runs_configuration(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    for env in ("base", "local", "small"):
        (conf / env).mkdir(parents=True)
    (conf / "base" / "parameters.yml").write_text(yaml.safe_dump({"cross_validation": {"n_folds": 5, "seed": 1}}))
    (conf / "small" / "parameters.yml").write_text(yaml.safe_dump({"cross_validation": {"n_folds": 4}}))
    (conf / "base" / "globals.yml").write_text("{}\n")
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    before = run_conf()
    try:
        record_run_conf(RunConf(conf, None))
        assert configured_folds() == 5
        record_run_conf(RunConf(conf, "small"))  # an environment merges key by key: its n_folds, base's seed
        assert configured_folds() == 4
        record_run_conf(RunConf(conf, "small", {"cross_validation": {"n_folds": 3}}))  # --params win
        assert configured_folds() == 3
        assert len(_fold_groups(create_pipeline())) == 3
    finally:
        record_run_conf(before)


def test_the_shipped_conf_builds_five_folds():
    assert yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_cross_validation.yml").read_text())["cross_validation"][
        "n_folds"
    ] == len(_fold_groups(create_pipeline(n_folds=5)))


def test_a_run_whose_folds_differ_from_the_pipeline_is_refused_before_any_work():
    class Params:
        class cross_validation:  # noqa: N801 - the parameter group's name
            n_folds = 3

    pipeline = create_pipeline(n_folds=5)
    with pytest.raises(ParameterError, match="n_folds is 3 for this run but the cross_validation pipeline was built"):
        check_folds_match_pipeline(Params, {"cross_validation"}, pipeline)
    check_folds_match_pipeline(Params, {"training"}, pipeline)  # another pipeline: nothing to check
    Params.cross_validation.n_folds = 5
    check_folds_match_pipeline(Params, {"cross_validation"}, pipeline)


def test_a_cross_validation_run_never_writes_what_training_writes():
    """Only the cohort (decoded once, read by both) is shared; the model inference and external validation take
    by default is training's classifier file, which no cross_validation node writes."""
    pipelines = registered_pipelines()
    shared = pipelines["training"].all_outputs() & pipelines["cross_validation"].all_outputs()
    cohort = {"model_input_table", "pixel_cache", "data_quality_report", "dropped_rows", "clean_metadata"}
    assert cohort <= shared and all(not name.startswith("cross_validation.") for name in shared)
    assert "classifier" not in pipelines["cross_validation"].all_outputs()
    assert not {"classifier", "uncalibrated_classifier", "training_history", "calibration"} & shared
    catalog = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog.yml").read_text())
    assert catalog["inference_model"]["model_path"] == catalog["classifier"]["filepath"]
    assert catalog["cross_validation.classifier"]["filepath"] != catalog["classifier"]["filepath"]
    written = {
        entry.get("filepath") or entry.get("dataset", {}).get("filepath")
        for name, entry in catalog.items()
        if isinstance(entry, dict) and name.startswith("cross_validation.")
    }
    training = {
        entry.get("filepath") or entry.get("dataset", {}).get("filepath")
        for name, entry in catalog.items()
        if isinstance(entry, dict) and name in pipelines["training"].all_outputs()
    }
    assert not (written - {None}) & training


def test_external_validation_is_one_namespace():
    pipeline = registered_pipelines()["external_validation"]
    outside = {name for name in pipeline.all_outputs() if not name.startswith("external.")}
    assert not outside, outside
    assert {n.namespace.split(".")[0] for n in pipeline.nodes} == {"external"}
    assert Path(PROJECT_ROOT / "src/cardio_kedro/pipelines/external_validation/pipeline.py").is_file()

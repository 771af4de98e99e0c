"""User errors end a command with their message and what to do; the traceback goes to a log file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.io import DatasetError

from cardio_kedro.common.errors import UserDatasetError, UserError, find_user_error, install_excepthook, plain_text


def test_a_user_error_is_found_through_kedro_wrapping():
    try:
        try:
            raise UserDatasetError("No cohort folder at 'x'")
        except DatasetError as inner:
            raise DatasetError("Failed while loading data from dataset cohort_images") from inner
    except DatasetError as outer:
        assert str(find_user_error(outer)) == "No cohort folder at 'x'"
    assert find_user_error(RuntimeError("a bug")) is None


def test_the_hook_prints_the_message_and_logs_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: calls.append(exc))
    install_excepthook()
    try:
        raise UserError("image_size is 0: set it in conf/base/globals.yml")
    except UserError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "Error: image_size is 0: set it in conf/base/globals.yml" in err and "Traceback" not in err
    assert "Traceback (most recent call last)" in (tmp_path / "logs" / "last_error.log").read_text()
    assert calls == []  # not passed on to the full-traceback hook
    bug = RuntimeError("a bug")
    sys.excepthook(RuntimeError, bug, None)
    assert calls == [(RuntimeError, bug, None)]  # anything else keeps the full traceback


def test_colour_codes_never_reach_a_message_a_tag_or_a_log(tmp_path, monkeypatch, capsys):
    coloured = "\x1b[1mReceived SIGTERM\x1b[0m: the run was \x1b[31;1mstopped\x1b[0m"
    assert plain_text(coloured) == "Received SIGTERM: the run was stopped"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "excepthook", lambda *exc: None)
    install_excepthook()
    try:
        raise UserError(coloured)
    except UserError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "Error: Received SIGTERM: the run was stopped" in err and "\x1b" not in err


@pytest.mark.kedro_session
def test_kedro_run_with_a_bad_parameter_prints_a_short_error(tiny_project):
    kedro = str(Path(sys.executable).parent / "kedro")
    command = [kedro, "run", "--pipelines=training", "--params=model_training.model.backbone=resnet50"]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    out = subprocess.run(command, check=False, cwd=tiny_project, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "Error: Invalid parameters; nothing was run" in text and "resnet50" in text
    assert "Traceback" not in text and "╭" not in text, text[-3000:]
    assert "Traceback" in (tiny_project / "logs" / "last_error.log").read_text()
    verbose = subprocess.run(
        command,
        check=False,
        cwd=tiny_project,
        env={**env, "CARDIO_TRACEBACK": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" in verbose.stdout + verbose.stderr and "Error: Invalid parameters" in verbose.stderr

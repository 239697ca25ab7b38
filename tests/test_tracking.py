"""Tracking helpers: transient failures are retried, permanent ones are not, and the store is checked."""

from __future__ import annotations

import pytest

from ray_jobs.tracking import TrackingUnavailable, check_tracking, default_tracking_uri, with_retry


def test_transient_failures_are_retried_until_success():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection reset by peer")
        return "ok"

    assert with_retry(flaky, "flaky call", first_wait=0.01) == "ok" and len(calls) == 3


def test_permanent_errors_and_exhausted_retries_raise():
    class BadRequest(Exception):
        error_code = "INVALID_PARAMETER_VALUE"

    calls = []

    def bad():
        calls.append(1)
        raise BadRequest("metric value must be a number")

    with pytest.raises(BadRequest):
        with_retry(bad, "bad call", first_wait=0.01)
    assert len(calls) == 1

    def down():
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        with_retry(down, "down", attempts=3, first_wait=0.01)


def test_default_store_and_checks(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = default_tracking_uri(tmp_path / "runs")
    assert uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    check_tracking(uri)
    assert (tmp_path / "runs").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert default_tracking_uri(tmp_path) == "http://127.0.0.1:9"
    with pytest.raises(TrackingUnavailable, match="refuses the plain file store"):
        check_tracking(f"file://{tmp_path}")


def test_explicit_tracking_uri_wins_and_an_empty_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert default_tracking_uri(tmp_path, "http://mlflow.example:5000") == "http://mlflow.example:5000"
    with pytest.raises(TrackingUnavailable, match="--tracking-uri is empty"):
        default_tracking_uri(tmp_path, "")  # `--tracking-uri "$MLFLOW_TRACKING_URI"` with the variable unset


def test_ui_hint_fits_the_kind_of_store(tmp_path):
    import sys
    from pathlib import Path

    from ray_jobs.tracking import ui_hint

    assert ui_hint("http://127.0.0.1:5000") == "open http://127.0.0.1:5000 in a browser"
    assert ui_hint("https://mlflow.example") == "open https://mlflow.example in a browser"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    assert mlflow_bin.is_file()  # the venv's own mlflow, not whatever `mlflow` PATH finds
    assert ui_hint(uri) == f"open the tracking UI with: {mlflow_bin} ui --backend-store-uri {uri} --host 127.0.0.1"

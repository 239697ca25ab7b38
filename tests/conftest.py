"""Session-wide fixtures: one local Ray cluster and one synthetic cohort per test session."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # keep test logs readable
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


BACKGROUND = pytest.StashKey["Lane"]()


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only the selected tests' commands run
def pytest_collection_modifyitems(session, config, items) -> None:
    """Start the background lane with the command of every selected test marked `@in_background`
    (tests/background.py), and run those tests last: the other tests never wait for the lane."""
    import tempfile

    from .background import Job, Lane

    jobs: dict[str, Job] = {}
    by_command: dict[object, Job] = {}  # tests marked with the same command share one run of it
    if not config.option.collectonly:
        for item in items:
            command = getattr(getattr(item, "function", None), "background_command", None)
            if command is not None:
                if command not in by_command:
                    by_command[command] = Job(command, Path(tempfile.mkdtemp(prefix=f"radiogen-{item.name[:40]}-")),
                                              label=item.name)
                jobs[item.nodeid] = by_command[command]
    if jobs and any("ray_cluster" in item.fixturenames for item in items):
        # The session's cluster first: the dashboard agent of every local cluster listens on Ray's fixed port 52365,
        # and the job API (`ray job submit`) needs it; the lane's own clusters, started later, run without one.
        with contextlib.redirect_stderr(io.StringIO()):  # Ray's start-up notice, printed before the session's
            start_ray()                                    # first line here (a fixture's output is captured)
    config.stash[BACKGROUND] = Lane(jobs, REPO)
    # Tests that wait for the lane's end (ray_cluster_alone) next to last, its own tests last: the rest of the
    # session runs while the lane finishes.
    alone = {item.nodeid for item in items if "ray_cluster_alone" in item.fixturenames and item.nodeid not in jobs}
    items[:] = sorted(items, key=lambda item: (item.nodeid in jobs, item.nodeid in alone))  # a stable sort


def pytest_terminal_summary(terminalreporter) -> None:
    """How long each background command ran: what to weigh before moving another test into the lane."""
    lane = terminalreporter.config.stash.get(BACKGROUND, None)
    ran = [] if lane is None else [job for job in lane.commands if job.seconds is not None]
    if ran:
        terminalreporter.write_line(f"background lane: {sum(j.seconds for j in ran):.0f} s: " + ", ".join(
            f"{j.label} {j.seconds:.0f} s" for j in ran))


def pytest_sessionfinish(session, exitstatus) -> None:
    lane = session.config.stash.get(BACKGROUND, None)
    if lane is not None:
        lane.stop(keep=exitstatus != 0)  # a failed session keeps the commands' folders and output


@pytest.fixture
def background(request):
    """The finished result of this test's `@in_background` command (started with the session)."""
    job = request.config.stash[BACKGROUND].jobs.get(request.node.nodeid)
    if job is None:
        pytest.fail("the background fixture is for tests marked @in_background(command)")
    return job.result(timeout=900)


@pytest.fixture
def ray_cluster_alone(ray_cluster, request):
    """The session's Ray cluster once the background lane has ended: the machine's only cluster, and not loaded.
    Beside the lane's own clusters, Ray's internals in a worker that look their cluster up without its address
    (Ray Train's placement-group cleaner calls the state API) print a traceback into a job's output, and under the
    lane's load the raylet warns of slow worker start-up there: noise a test of a job's quiet output cannot tell
    from radiogen's own."""
    request.config.stash[BACKGROUND].wait(timeout=900)
    return ray_cluster


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real third-party CT, masks and gene tables (../shared/data/real); CI has them."""
    if not SHARED_REAL.is_dir():
        pytest.fail(f"real test data not found at {SHARED_REAL}; clone the repository next to ../shared")
    return SHARED_REAL


def start_ray():
    """The session's real local Ray cluster, once (2 CPUs, dashboard on loopback: its job API takes `ray job
    submit`)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
    return ray


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's Ray cluster, shared by every test that needs one."""
    ray = start_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_dashboard(ray_cluster) -> str:
    """The session cluster's dashboard address (http://127.0.0.1:PORT), where `ray job submit` sends jobs."""
    import ray._private.worker

    return f"http://{ray._private.worker._global_node.webui_url}"  # Ray has no public accessor


@pytest.fixture(scope="session")
def synthetic_cohort(tmp_path_factory) -> Path:
    """A small synthetic cohort in the NIfTI layout (cases.csv, images/, masks/, genes.tsv, truth.json), of the
    aligned design (a co-expressed module per program) that the tests of prep, training and evaluation expect."""
    from data_prep.cohort import write_cohort

    out = tmp_path_factory.mktemp("cohort_nifti")
    write_cohort(out, subjects=6, seed=0, fmt="nifti", matrix=128, design="aligned")
    return out


@pytest.fixture(scope="session")
def synthetic_cohort_tcia(tmp_path_factory) -> Path:
    """A small synthetic cohort in the TCIA layout (CT DICOM series + DICOM SEG per subject)."""
    from data_prep.cohort import write_cohort

    out = tmp_path_factory.mktemp("cohort_tcia")
    write_cohort(out, subjects=3, seed=1, fmt="tcia", matrix=128, design="aligned")
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(root: Path, port: int):
    """A real `mlflow server` (sqlite backend under root, proxied artifacts) on 127.0.0.1:port, once healthy."""
    import subprocess
    import sys
    import time
    import urllib.request

    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=open(root / "server.log", "a"), stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)


def stop_mlflow_server(proc, sig=None) -> None:
    """Stop the server and the workers it started (its process group)."""
    import os
    import signal
    import subprocess

    os.killpg(proc.pid, sig or signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (sqlite backend, proxied artifacts) on 127.0.0.1 and a free port; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = start_mlflow_server(root, port)
    yield f"http://127.0.0.1:{port}"
    stop_mlflow_server(proc)


@pytest.fixture(scope="session")
def prepared(synthetic_cohort, ray_cluster, tmp_path_factory) -> Path:
    """The synthetic cohort through the real `radiogen prep` at 32x32 (the tiny config's size)."""
    from .helpers import prepare_tiny

    return prepare_tiny(synthetic_cohort, tmp_path_factory.mktemp("prepared") / "data")


@pytest.fixture(scope="session")
def drivers_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """(cohort, prepared data): a 16-subject drivers cohort prepared at 32 px in this process (6 validation
    subjects: enough for the validation map objective and the program responses)."""
    from data_prep.cohort import write_cohort
    from ray_jobs.cli import main

    root = tmp_path_factory.mktemp("drivers")
    cohort = write_cohort(root / "cohort", subjects=16, seed=0, genes=120, matrix=64, design="drivers")
    assert main(["prep", "--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"), "--out",
                 str(root / "data"), "--image-size", "32", "--bg-slices", "4", "--workers", "0"]) == 0
    return cohort, root / "data"

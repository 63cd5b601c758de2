import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Rules call the `advkd` console command: make the venv's bin/ reachable however pytest was started.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
# Tests share 2 cores with nothing else in CI; keep torch from oversubscribing them. Under pytest-xdist
# (`pytest -n N`) each worker gets one core's worth.
XDIST = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1
os.environ.setdefault("OMP_NUM_THREADS", "1" if XDIST else "2")


def pytest_collection_modifyitems(config, items):
    """A `timing` test measures wall time: beside another worker it would time that worker too, so under
    `pytest -n` it is skipped, and `make test` runs the timing tests on their own (`pytest -m timing`)."""
    if XDIST:
        skip = pytest.mark.skip(reason="a timing test runs alone: `pytest -m timing tests/unit` (as make test does)")
        for item in items:
            if item.get_closest_marker("timing"):   # the marker, not a test id that says "timing"
                item.add_marker(skip)


@pytest.fixture
def repo_root():
    return ROOT


@pytest.fixture
def venv_bin():
    return Path(sys.executable).parent


@pytest.fixture
def judge(tmp_path):
    """The shipped Fashion-MNIST judge installed by the evaluator stage, as the DAG's evaluator rule does
    (32x32 data: it scores inside the 2-pixel zero border); returns its evaluator.json."""
    from advkd.stages.metrics import make_evaluator

    data = {"dataset": "fashion-mnist", "resolution": 32, "channels": 1, "heldout_count": 16}
    make_evaluator({"source": "shipped", "shipped": str(ROOT / "experiments/assets/evaluator-fmnist")}, data,
              tmp_path / "evaluator", border=2)
    return tmp_path / "evaluator" / "evaluator.json"

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Rules call the `advkd` console command: make the venv's bin/ reachable however pytest was started.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
# Tests share 2 cores with nothing else in CI; keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def repo_root():
    return ROOT


@pytest.fixture
def venv_bin():
    return Path(sys.executable).parent

"""Where one job's seconds go: its useful work (sampling batches, training epochs, scoring) against everything else
(interpreter and imports, loading, compiling), for the report's DAG profile (advkd.dag_profile).

A stage says where its work starts (`begin("training")`, after loading and building) or adds the seconds its own
clock measured (`add("sampling", seconds)`); the dispatcher (advkd.cli) writes the job's record as the last
line of its output, `advkd-job-clock {json}`, which every rule sends to the job's log. A stage that marks nothing
counts its whole call as work (the small stages: joining arrays, writing tables). Reading this module loads
nothing heavy: the dispatcher imports it before the stage.
"""

from __future__ import annotations

import json
import os
import time

MARK = "advkd-job-clock "

_work: dict[str, list[float]] = {}   # kind -> [wall seconds, CPU seconds or None] of this process
_begun: list = []                    # [kind, wall, CPU] of the work running from begin() to the job's end
_notes: dict = {}                    # name -> JSON-able facts of the job's work (e.g. its training speed)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def begin(kind: str) -> None:
    """From now to the end of the stage's call, the job does work of `kind` (call it after loading and building)."""
    _close(time.time())
    _begun[:] = [kind, time.time(), _cpu()]


def add(kind: str, wall_s: float) -> None:
    """Count `wall_s` seconds, timed by the stage's own clock (e.g. a sampler's, which leaves compiling out), as
    work of `kind`."""
    acc = _work.setdefault(kind, [0.0, None])
    acc[0] += wall_s


def note(name: str, value) -> None:
    """Attach a JSON-able fact about the job's work to its record (e.g. the training steps' GFLOP/s against their
    convolution probe), for the DAG profile."""
    _notes[name] = value


def _close(now: float) -> None:
    if _begun:
        kind, w0, c0 = _begun
        acc = _work.setdefault(kind, [0.0, 0.0])
        acc[0] += now - w0
        acc[1] = (acc[1] or 0.0) + _cpu() - c0
        _begun.clear()


def process_start() -> float | None:
    """When this process started (Unix seconds, 10 ms resolution; Linux /proc), so that the interpreter's start
    and the imports before any of our code count too; None elsewhere.

    /proc gives the start in clock ticks since boot; the boot's Unix time is taken from the clocks now
    (CLOCK_REALTIME - CLOCK_BOOTTIME), not from /proc/stat's btime, which is whole seconds: with it every job
    started up to a second early, and the DAG profile counted that second as start-up."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):   # no /proc or no CLOCK_BOOTTIME: not Linux
        return None


def record(stage: str, entered: float, imported: float, called: float, ended: float) -> dict:
    """The job's record: Unix times of process start, dispatcher entry, stage imported, stage called and end;
    CPU seconds of the process; work by kind (wall, CPU); the stage's whole call as work when it marked none."""
    _close(ended)
    work_by_kind = {k: {"wall_s": round(w, 3), "cpu_s": None if c is None else round(c, 3)}
                    for k, (w, c) in _work.items()}
    if not work_by_kind:
        work_by_kind = {"call": {"wall_s": round(ended - called, 3), "cpu_s": None}}
    notes = dict(_notes)
    _work.clear()   # the next stage called in this process (tests) starts its own record
    _notes.clear()
    start = process_start()
    return {"stage": stage, "pid": os.getpid(), "process_start": start if start and start <= entered else entered,
            "entered": entered, "imported": imported, "called": called, "ended": ended, "cpu_s": round(_cpu(), 3),
            "work": work_by_kind, **({"notes": notes} if notes else {})}


def line(rec: dict) -> str:
    return MARK + json.dumps(rec)


def parse(text: str) -> dict | None:
    """The last record in a job's log text, or None."""
    for row in reversed(text.splitlines()):
        i = row.find(MARK)
        if i >= 0:
            try:
                return json.loads(row[i + len(MARK):])
            except json.JSONDecodeError:
                return None
    return None

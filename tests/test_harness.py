"""The test harness itself: a launch whose worker processes hang fails its test instead of stalling CI."""

from __future__ import annotations

import os
import time

import pytest

from helpers import run_fresh

HANGING_LAUNCH = """
import os, sys, time
import torch.multiprocessing as mp

def worker(rank, out):
    with open(f"{out}/{rank}.pid", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(1000)  # a rank waiting on a peer that never comes

mp.start_processes(worker, args=(OUT,), nprocs=2, start_method="fork")
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a killed child not yet reaped by its (killed) parent is a zombie
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to see that the workers are gone")
def test_a_hanging_launch_fails_with_the_workers_stacks_and_leaves_no_process_behind(tmp_path):
    # (15 s: time for the fresh interpreter to import torch and fork its ranks on a loaded 2-core machine, so that
    # the stacks show them waiting; 6 s was too short under CI's load once)
    with pytest.raises(AssertionError) as err:
        run_fresh(HANGING_LAUNCH.replace("OUT", repr(str(tmp_path))), timeout=15, what="the hanging launch")
    message = str(err.value)
    assert "the hanging launch did not finish within 15 s" in message
    assert "time.sleep" in message or "in worker" in message  # faulthandler's stack of a hung rank
    pids = [int((tmp_path / f"{r}.pid").read_text()) for r in range(2)]
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def test_a_failing_launch_reports_its_output():
    with pytest.raises(AssertionError, match=r"(?s)the broken launch failed \(exit code 1\).*ZeroDivisionError"):
        run_fresh("1 / 0", timeout=60, what="the broken launch")

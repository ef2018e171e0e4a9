"""Independent references shared by the tests: brute force and live reference tools."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import prune


def frozen_copy(layer: nn.Module) -> nn.Module:
    """A deep copy of ``layer`` with any ``torch.nn.utils.prune`` pruning made permanent and no hooks.

    A pruned layer's weight is recomputed by a pre-hook from ``weight_orig * weight_mask``
    (and, being a non-leaf, cannot be deep-copied); a deep copy would also keep any attached
    counter's hooks. Brute-force references are built on this plain copy.
    """
    if "weight" in layer._parameters:
        ref = copy.deepcopy(layer)
    else:
        weight = layer.weight
        layer.weight = weight.detach()
        try:
            ref = copy.deepcopy(layer)
        finally:
            layer.weight = weight
    for hook in list(ref._forward_pre_hooks.values()):
        if isinstance(hook, prune.BasePruningMethod):
            prune.remove(ref, hook._tensor_name)
    for attr, hooks in vars(ref).items():
        if attr.startswith("_") and "hooks" in attr and isinstance(hooks, dict):
            hooks.clear()
    return ref


def brute_force_map(layer: nn.Module, in_sample_shape: Sequence[int], effective: bool = True) -> torch.Tensor:
    """Column sums of the Jacobian of ``layer`` with its nonzero weights set to one (dense: all
    weights one) and no bias, in float64: each input neuron's number of weight taps."""
    ref = frozen_copy(layer)
    with torch.no_grad():
        w = ref.weight
        w.copy_((w != 0).to(w.dtype) if effective else torch.ones_like(w))
        if getattr(ref, "bias", None) is not None:
            ref.bias.zero_()
    ref = ref.double()
    x = torch.zeros(1, *in_sample_shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: ref(v).reshape(-1), x)
    return jac.reshape(-1, *in_sample_shape).sum(0)


def brute_force_counts(layer: nn.Module, x: torch.Tensor, samples: int, events: bool = True) -> Dict[str, float]:
    """dense / eff / synops of one call by explicit Jacobians (any layer, pruned or not).

    Values in {-1, 0, 1}: effective ops are ACs; other integers (spike counts) are ``|x|``
    accumulate events each when ``events`` (else NeuroBench's binarised MACs); anything else MACs.
    """
    sample_shape = x.shape[1:]
    eff_map = brute_force_map(layer, sample_shape, True)
    dense_map = brute_force_map(layer, sample_shape, False)
    xd = x.detach().double()
    spiking = bool(((xd == 0) | (xd.abs() == 1)).all())
    integer = events and bool((xd == xd.round()).all())
    eff = float(((xd != 0).double() * eff_map).sum())
    synops = float((xd.abs() * eff_map).sum())
    acs = eff if spiking else synops if integer else 0.0
    return {
        "dense": float(dense_map.sum()) * x.shape[0] / samples,
        "eff_macs": 0.0 if (spiking or integer) else eff / samples,
        "eff_acs": acs / samples,
        "synops": synops / samples,
    }


def neurobench_synops(net: nn.Module, data: torch.Tensor, snntorch: bool) -> Dict[str, float]:
    """NeuroBench's SynapticOperations on ``net`` for ``data``.

    ``snntorch=True``: ``data`` is ``[B, T, ...]`` and the net is run through
    NeuroBench's ``SNNTorchModel`` (one call per time step). Otherwise the net
    is wrapped in ``TorchModel`` and called once on ``data``.
    """
    from neurobench.metrics.workload import SynapticOperations
    from neurobench.models import SNNTorchModel, TorchModel

    model = SNNTorchModel(net) if snntorch else TorchModel(net)
    model.register_hooks()
    try:
        preds = model(data)
        result = SynapticOperations()(model, preds, (data, None))
    finally:
        model.cleanup_hooks()
    return {"dense": float(result["Dense"]), "eff_macs": float(result["Effective_MACs"]),
            "eff_acs": float(result["Effective_ACs"])}


def linear_pair_synops(net: nn.Sequential, x: torch.Tensor) -> Dict[str, float]:
    """Per-sample synops of ``Linear -> ReLU -> Linear`` layers "0" and "2", by hand:
    input value x nonzero fan-out (computed without running the hooked modules)."""
    with torch.no_grad():
        fan0 = (net[0].weight != 0).sum(0).double()  # fan-out of each input neuron
        fan2 = (net[2].weight != 0).sum(0).double()
        h = torch.relu(torch.nn.functional.linear(x, net[0].weight, net[0].bias)).double()
        b = x.shape[0]
        return {"0": float((x.double().abs() * fan0).sum()) / b, "2": float((h * fan2).sum()) / b}


def quiet_unreachable(fn, *args, **kwargs):
    """Call ``fn`` with synopsloss' UnreachableTargetWarning silenced."""
    from synopsloss.loss import UnreachableTargetWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreachableTargetWarning)
        return fn(*args, **kwargs)


def free_port() -> int:
    """A free TCP port on the loopback interface (for gloo process groups in the tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def run_fresh(code: str, timeout: float = 300, cwd: Optional[Path] = None, what: str = "the code") -> str:
    """Run ``code`` in a fresh interpreter in a session of its own and return what it printed.

    Tests that start worker processes (gloo ranks, Lightning DDP, accelerate) run them from here, never
    from the test process: a ``fork`` of the test process, whose earlier tests started threads (OpenMP teams,
    ``torch.compile`` workers), can deadlock in the child, and a hung child that is not a daemon keeps
    the test process from exiting. Past ``timeout`` every process of the session (the workers too) is
    sent SIGUSR1 (faulthandler prints where each one hangs) and then killed, and the test fails with
    their output.
    """
    path = [str(TESTS), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    prelude = ("import faulthandler, signal, sys, torch\n"
               "faulthandler.register(signal.SIGUSR1, all_threads=True)\n"
               "torch.set_num_threads(1)\n")
    proc = subprocess.Popen([sys.executable, "-c", prelude + code], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_session(proc.pid, signal.SIGUSR1)
        time.sleep(2.0)
        _signal_session(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        # (the stacks of every process: the parent's threads may print after its ranks', so keep enough of it)
        raise AssertionError(f"{what} did not finish within {timeout:.0f} s; its processes were killed. "
                             f"Output (with the stacks of the hung processes):\n{out[-30000:]}") from None
    finally:
        _signal_session(proc.pid, signal.SIGKILL)  # no worker outlives its test
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed (exit code {proc.returncode}):\n{out[-6000:]}")
    return out


def run_fresh_call(module: str, function: str, *args: Any, timeout: float = 300) -> str:
    """``run_fresh`` of ``module.function(*args)``: a function of a test module, literal arguments."""
    return run_fresh(f"import {module}\n{module}.{function}(*{args!r})\n", timeout=timeout,
                     what=f"{module}.{function}{args!r}")


def _signal_session(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

"""``synopsloss report``: the per-layer synops table of a user's model factory.

::

    synopsloss report PACKAGE.MODULE:FACTORY --input-shape C,H,W [--time-steps 20] \\
        [--batch 8] [--batches 1] [--rate R | --input FILE] [--feed auto|steps|sequence|folded] \\
        [--dt SECONDS] [--energy PRESET] [--format text|markdown|csv] [--plot out.png]

``FACTORY`` is called without arguments and must return an ``nn.Module`` (or
be one). Inputs are Poisson spikes (Bernoulli with probability ``--rate`` per
neuron and time step, seeded) or a tensor saved with ``torch.save`` shaped
``[samples, T, *input_shape]``. Models are fed per time step (``steps``:
``model(x[:, t])`` after resetting snntorch / sinabs state, the snntorch style)
or whole sequences (``sequence``: ``model(x)`` with ``x`` shaped ``[B, T, ...]``,
the sinabs style), or time folded into the batch (``folded``: ``model(x)``
with ``x`` shaped ``[B*T, ...]``, for sinabs ``*Squeeze`` layers); ``auto``
picks ``folded`` when the model holds ``*Squeeze`` layers, ``sequence`` when
it holds other sinabs layers, else ``steps``. ``FACTORY``'s module is looked
up on ``sys.path`` and in the current directory. Counts are accumulated over
all batches (per sample).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, List

__all__ = ["add_arguments", "run"]


def _parsed(text: str, convert, valid, message: str):
    """``convert(text)`` if it succeeds and passes ``valid``, else one argparse error with ``message``."""
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise argparse.ArgumentTypeError(f"{message}, got {text!r}")
    return value


def _split_dims(text: str) -> List[int]:
    parts = text.strip().replace("x", ",").split(",")
    if parts and not parts[-1].strip():  # allow one trailing comma: "6,"
        parts = parts[:-1]
    return [int(v) for v in parts]  # an empty part ("2,,3") is an error, not skipped


def _shape(text: str) -> List[int]:
    return _parsed(text, _split_dims, lambda dims: dims and all(d > 0 for d in dims),
                   "--input-shape must be positive integers like 1,28,28")


def _positive(text: str) -> int:
    return _parsed(text, int, lambda v: v > 0, "expected a positive integer")


def _rate(text: str) -> float:
    return _parsed(text, float, lambda v: 0.0 <= v <= 1.0, "--rate must be a probability in [0, 1]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``report`` arguments to ``parser``."""
    parser.add_argument("target", metavar="PACKAGE.MODULE:FACTORY",
                        help="import path of a function returning the model (or of the model itself)")
    parser.add_argument("--input-shape", type=_shape, default=None,
                        help="shape of one sample at one time step, e.g. 2,34,34 (not needed with --input)")
    parser.add_argument("--time-steps", "--timesteps", dest="timesteps", type=_positive, default=20,
                        help="time steps per sample (default 20: enough for leaky neurons to fire)")
    parser.add_argument("--batch", type=_positive, default=8, help="samples per batch (default 8)")
    parser.add_argument("--batches", type=_positive, default=1, help="number of Poisson batches (default 1)")
    parser.add_argument("--rate", type=_rate, default=0.1, help="Poisson spike probability per neuron and step (default 0.1)")
    parser.add_argument("--input", metavar="FILE", default=None,
                        help="a torch.save'd tensor [samples, T, *input_shape] to use instead of Poisson spikes")
    parser.add_argument("--feed", choices=("auto", "steps", "sequence", "folded"), default="auto",
                        help="call the model per time step, with the whole [B, T, ...] sequence, or with time "
                             "folded into the batch [B*T, ...] (default auto)")
    parser.add_argument("--dt", type=float, default=None, help="seconds per time step (adds synops per second)")
    parser.add_argument("--energy", default="horowitz45nm",
                        help="energy preset: horowitz45nm, lemaire2022, cpu, gpu, arm, loihi, spinnaker, spinnaker2, none")
    parser.add_argument("--format", choices=("text", "markdown", "csv"), default="text", help="output format")
    parser.add_argument("--plot", metavar="OUT.png", default=None, help="save bar charts of synops and firing rates")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the Poisson input (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


class _Error(Exception):
    pass


def _load(target: str):
    import torch

    if target.count(":") != 1:
        raise _Error(f"the model must be given as PACKAGE.MODULE:FACTORY (one colon), got {target!r}")
    mod_name, attr = target.split(":")
    if not mod_name or not attr:
        raise _Error(f"the model must be given as PACKAGE.MODULE:FACTORY, got {target!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # a factory module next to the user, as `python -c` would find it
    try:
        module = importlib.import_module(mod_name)
    except ImportError as err:
        missing = getattr(err, "name", None)
        if isinstance(err, ModuleNotFoundError) and missing and (mod_name == missing
                                                                 or mod_name.startswith(missing + ".")):
            raise _Error(f"cannot import module {mod_name!r}: {err}. Is its package on PYTHONPATH "
                         "(or installed), and is the name spelled with dots, not slashes?") from err
        raise _Error(f"importing module {mod_name!r} failed: {type(err).__name__}: {err}. "
                     "Fix the module so that `python -c 'import MODULE'` works") from err
    except Exception as err:  # the module itself fails while importing (SyntaxError, its own code)
        raise _Error(f"importing module {mod_name!r} failed: {type(err).__name__}: {err}. "
                     "Fix the module so that `python -c 'import MODULE'` works") from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(module) if not n.startswith("_"))
            raise _Error(f"module {mod_name!r} has no attribute {attr!r}; it defines: {', '.join(names[:20])}")
        obj = getattr(obj, part)
    if isinstance(obj, torch.nn.Module):
        return obj
    if not callable(obj):
        raise _Error(f"{target!r} is of type {type(obj).__name__}, neither an nn.Module nor a factory function")
    try:
        model = obj()
    except Exception as err:
        raise _Error(f"calling the factory {target!r} failed: {type(err).__name__}: {err}") from err
    if not isinstance(model, torch.nn.Module):
        raise _Error(f"the factory {target!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _auto_feed(model) -> str:
    from ..registry import is_time_folding, neuron_library

    if any(is_time_folding(m) for m in model.modules()):
        return "folded"
    if any(neuron_library(m) == "sinabs" for m in model.modules()):
        return "sequence"
    return "steps"


def _reset_state(model) -> None:
    """Reset snntorch hidden states and sinabs neuron states before a new batch."""
    snntorch = sys.modules.get("snntorch")
    if snntorch is not None and any(isinstance(m, snntorch.SpikingNeuron) for m in model.modules()):
        from snntorch import utils

        utils.reset(model)
    layers = sys.modules.get("sinabs.layers")
    st = getattr(layers, "StatefulLayer", None) if layers is not None else None
    if st is not None:
        for m in model.modules():
            if isinstance(m, st):
                m.reset_states()


#: the options of the Poisson input, unused with ``--input FILE``, and their defaults
_POISSON = {"timesteps": ("--timesteps", 20), "batches": ("--batches", 1), "rate": ("--rate", 0.1),
            "seed": ("--seed", 0)}


def _batches(args, torch):
    if args.input is not None:
        unused = [flag for key, (flag, default) in _POISSON.items() if getattr(args, key, default) != default]
        if unused:
            print(f"synopsloss report: warning: {', '.join(unused)} set the Poisson input; with --input FILE "
                  "they are not used (the file gives the samples and their time steps)", file=sys.stderr)
        try:
            data = torch.load(args.input, map_location="cpu", weights_only=True)
        except FileNotFoundError as err:
            raise _Error(f"--input file {args.input!r} does not exist") from err
        except Exception as err:
            if isinstance(err, __import__("pickle").UnpicklingError) or "weights_only" in str(err):
                # (torch suggests weights_only=False: the file holds objects, not one tensor; they are not unpickled)
                raise _Error(f"--input {args.input!r} holds Python objects, not one tensor (torch.load with "
                             "weights_only=True refused them; synopsloss does not unpickle objects from a file). "
                             "Save the spikes as one tensor: torch.save(spikes, path) with spikes shaped "
                             "[samples, T, *input_shape]") from err
            raise _Error(f"cannot read --input {args.input!r} with torch.load: {err}") from err
        if not isinstance(data, torch.Tensor) or data.dim() < 3:
            raise _Error(f"--input must hold one tensor shaped [samples, T, *input_shape], got "
                         f"{tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__}")
        if args.input_shape is not None and list(data.shape[2:]) != list(args.input_shape):
            raise _Error(f"--input holds samples of shape {list(data.shape[2:])} but --input-shape is {args.input_shape}")
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise _Error(f"--input holds {data.shape[0]} samples of {data.shape[1]} time steps (shape "
                         f"{list(data.shape)}): there is nothing to count; give at least one sample and one step")
        data = data.float()
        return [data[i:i + args.batch] for i in range(0, data.shape[0], args.batch)]
    if args.input_shape is None:
        raise _Error("give --input-shape (one sample at one time step, e.g. 1,28,28) or --input FILE")
    gen = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, args.timesteps, *args.input_shape)
    return [(torch.rand(shape, generator=gen) < args.rate).float() for _ in range(args.batches)]


def _silent_neurons(snap) -> List[str]:
    """The neuron layers of ``snap``, when none of them emitted a spike (else ``[]``)."""
    neurons = {n: s for n, s in snap.neurons.items() if s.kind == "neuron"}
    if not neurons or any((s.nonzero or 0) > 0 for s in neurons.values()):
        return []
    return list(neurons)


def run(args: argparse.Namespace) -> int:
    """Run ``synopsloss report``; returns the exit status (2 on a usage error)."""
    try:
        return _run(args)
    except _Error as err:
        print(f"synopsloss report: error: {err}", file=sys.stderr)
        return 2


def _sample_spread(snap: Any) -> str:
    """One line: the dataset mean of per-sample synops with its 95% confidence interval, and quantiles."""
    if not snap.per_sample:
        return ""
    d = snap.distribution()
    ci = f" +- {d['ci95']:,.1f} (95% CI, Student's t)" if d["n"] > 1 else ""
    return (f"Synops per sample over {int(d['n'])} samples: mean {d['mean']:,.1f}{ci}; "
            f"p50 {d['p50']:,.1f}, p95 {d['p95']:,.1f}, p99 {d['p99']:,.1f}, max {d['max']:,.1f}")


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..counter import SynOpsCounter
    from ..registry import is_time_folding

    model = _load(args.target)
    model.eval()
    batches = _batches(args, torch)
    feed = args.feed
    if feed == "auto":
        feed = _auto_feed(model)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # the batches are [B, T, ...] (or [B*T, ...] folded: the Squeeze layers know B; a model without them
            # is told B per batch, so its numbers stay per sample, not per step)
            told = feed == "folded" and not any(is_time_folding(m) for m in model.modules())
            # (told: the counter learns B per batch, and T as the folded rows over B)
            counter = SynOpsCounter(model, batch_dim=0, per_sample=feed != "folded", time_folded=told,
                                    batch_size=args.batch if told else None)
        except ValueError as err:
            raise _Error(f"nothing to count in {args.target}: {err}") from err
    for w in caught:
        print(f"synopsloss report: warning: {w.message}", file=sys.stderr)
    counter.reset(accumulated=True)
    progress = tqdm(batches, desc="batches", unit="batch", disable=args.no_progress or len(batches) < 2, file=sys.stderr)
    with torch.no_grad():
        for x in progress:
            counter.reset()
            if told:
                counter.batch_size = int(x.shape[0])
            _reset_state(model)
            try:
                if feed == "sequence":
                    model(x)
                elif feed == "folded":
                    model(x.reshape(-1, *x.shape[2:]))
                else:
                    for t in range(x.shape[1]):
                        model(x[:, t])
            except Exception as err:
                shape = {"sequence": list(x.shape), "folded": [x.shape[0] * x.shape[1], *x.shape[2:]]}.get(
                    feed, list(x[:, 0].shape))
                raise _Error(f"the model failed on an input of shape {shape} ({feed} feed): "
                             f"{type(err).__name__}: {err}. Check --input-shape (one sample at one time step, "
                             "without batch and time) and --feed.") from err
            try:
                counter.snapshot()
            except RuntimeError as err:
                raise _Error(f"no synaptic layer of {type(model).__name__} ran on the input: nothing was counted") from err
            except FloatingPointError as err:  # NaN or inf in a counted layer's input
                raise _Error(str(err)) from err
            if counter.samples != int(x.shape[0]):  # a layer with a fixed batch size read a short batch otherwise
                steps = sorted({getattr(m, "num_timesteps", None) for m in model.modules()} - {None, -1})
                if steps and args.timesteps not in steps:  # (layers built for another number of time steps)
                    raise _Error(
                        f"a batch of {int(x.shape[0])} samples was read as {counter.samples} samples: the model's "
                        f"time-folding layers are built for num_timesteps={steps[0]}, and --timesteps is "
                        f"{args.timesteps}. Pass --timesteps {steps[0]}")
                raise _Error(
                    f"a batch of {int(x.shape[0])} samples was read as {counter.samples} samples: the model's "
                    "time-folding layers have a fixed batch size (sinabs *Squeeze(batch_size=...)) that this batch "
                    f"does not have (the last batch of --input, {int(x.shape[0])} of --batch {args.batch}). Give "
                    "--input a multiple of --batch samples, or build the layers with num_timesteps= instead of "
                    "batch_size=")
    counter.reset()
    silent = _silent_neurons(counter.snapshot(accumulated=True))
    if silent:
        source = "the --input data" if args.input is not None else (
            f"--timesteps {args.timesteps}, --rate {args.rate:g}, --batch {args.batch}")
        print(f"synopsloss report: warning: no neuron fired (neuron layers {', '.join(silent)}), so the layers "
              f"after them count 0 synops. With {source}, raise --timesteps or --rate (leaky neurons need "
              "several steps of input to reach their threshold), or feed real data with --input FILE",
              file=sys.stderr)
    energy = None if args.energy.lower() == "none" else args.energy
    try:
        table = counter.table(dt=args.dt, energy=energy, accumulated=True)
    except ValueError as err:
        raise _Error(str(err)) from err
    spread = _sample_spread(counter.snapshot(accumulated=True)) if feed != "folded" else ""
    counter.remove()
    if args.format == "markdown":
        sys.stdout.write(table.to_markdown())
    elif args.format == "csv":
        sys.stdout.write(table.to_csv())
    else:
        print(table)
        if spread:
            print(spread)
    if args.plot:
        try:
            table.plot(args.plot)
        except OSError as err:  # (a directory that does not exist, no permission)
            raise _Error(f"cannot save the plot to {args.plot!r}: {err}") from err
        print(f"plot saved to {args.plot}", file=sys.stderr)
    return 0

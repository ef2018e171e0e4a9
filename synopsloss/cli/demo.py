"""``synopsloss demo``: a small spiking CNN on 8x8 digits, trained without and with the synops loss.

See :mod:`synopsloss.cli.digits` for the data, the network and the training
loop. The second run follows the recipe of ``docs/training.md``: a budget in
network-driven synops per sample (by default a quarter of what the first run's
network uses on the test set; ``--synops`` names one) passed to
``SynOpsLoss(counter, target=budget)``, with the weight warming up over the
first quarter of the epochs. Both per-layer tables (with a legend of their
columns), the test accuracies, the synops reduction and how close the second
run came to its budget are printed, and a per-layer bar chart of both runs is
saved to ``synopsloss-demo.png`` in the current directory (``--plot PATH``
elsewhere, ``--no-plot`` for none).

Example
-------
>>> from synopsloss.cli import demo
>>> demo.main(["--epochs", "1", "--train-samples", "64", "--test-samples", "32", "--quiet", "--no-plot"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import List, Optional

import torch

from .digits import SpikingCNN, _plot, format_table, legend, load_data, summary, train, warmup_weight

#: Where the bar chart goes unless ``--plot`` says otherwise (in the current directory).
DEFAULT_PLOT = "synopsloss-demo.png"

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``synopsloss demo`` options."""
    parser.add_argument("--epochs", type=int, default=20, help="training epochs per run (default 20)")
    parser.add_argument("--target", type=float, default=0.25,
                        help="the synops budget per sample, as a fraction of the network-driven synops per sample of "
                             "the first run (trained without the loss, on the test set); the loss gets the budget "
                             "as an absolute target (default 0.25)")
    parser.add_argument("--synops", type=float, default=None, metavar="N",
                        help="the budget in network-driven synops per sample instead (overrides --target)")
    parser.add_argument("--weight", type=float, default=1.0, help="weight (lambda) of the synops loss (default 1)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="epochs over which the loss weight rises linearly from 0 (default: a quarter of "
                             "--epochs; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (initialisation, split, spikes)")
    parser.add_argument("--time-steps", "--timesteps", dest="time_steps", type=int, default=8,
                        help="spike frames per digit (default 8)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (cosine-annealed)")
    parser.add_argument("--train-samples", type=int, default=None, help="use only this many training digits")
    parser.add_argument("--test-samples", type=int, default=None, help="use only this many test digits")
    parser.add_argument("--plot", metavar="PNG", default=DEFAULT_PLOT,
                        help=f"where to save the per-layer bar chart of both runs (default {DEFAULT_PLOT})")
    parser.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="save no bar chart")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check(args: argparse.Namespace) -> Optional[str]:
    for name in ("epochs", "time_steps", "batch_size"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
    for name in ("train_samples", "test_samples"):
        v = getattr(args, name)
        if v is not None and v < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {v}"
    for name in ("target", "synops", "weight", "warmup", "lr"):
        v = getattr(args, name)
        if v is not None and math.isinf(v):
            return f"--{name} must be a finite number, got {v}"
    if args.plot is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        return f"--plot {args.plot}: its folder does not exist (create it, or pass --no-plot)"
    if not args.target > 0:
        return f"--target must be > 0 (a fraction of the first run's network-driven synops), got {args.target}"
    if args.synops is not None and not args.synops > 0:
        return f"--synops must be > 0 (network-driven synops per sample), got {args.synops}"
    if not args.weight >= 0:
        return f"--weight must be >= 0, got {args.weight}"
    if args.warmup is not None and not args.warmup >= 0:
        return f"--warmup must be >= 0 epochs, got {args.warmup}"
    if not args.lr > 0:
        return f"--lr must be > 0, got {args.lr}"
    return None


def run(args: argparse.Namespace) -> int:
    """Train both networks and print the tables, accuracies and synops reduction."""
    problem = _check(args)
    if problem:
        print(f"synopsloss demo: {problem}", file=sys.stderr)
        return 2
    try:
        import snntorch  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as err:
        print(f"synopsloss demo needs snntorch and scikit-learn ({err}); install with: pip install 'synopsloss[demo]'",
              file=sys.stderr)
        return 1
    from ..loss import SynOpsLoss

    torch.manual_seed(args.seed)
    data = list(load_data(args.seed))
    if args.train_samples:
        data[0], data[1] = data[0][:args.train_samples], data[1][:args.train_samples]
    if args.test_samples:
        data[2], data[3] = data[2][:args.test_samples], data[3][:args.test_samples]
    init = SpikingCNN().state_dict()
    common = dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, time_steps=args.time_steps,
                  seed=args.seed, progress=not args.quiet)
    print(f"synopsloss demo: spiking CNN on {len(data[1])} training / {len(data[3])} test 8x8 digits, "
          f"{args.time_steps} time steps, {args.epochs} epochs per run", flush=True)

    net = SpikingCNN()
    net.load_state_dict(init)
    base = train(net, tuple(data), desc="without synops loss", **common)
    print(f"\n1) cross-entropy only ({base.seconds:.0f} s): test accuracy {base.accuracy:.1%}", flush=True)
    print(format_table(base), flush=True)
    print(legend(), flush=True)

    # the recipe (docs/training.md): a budget in network-driven synops per sample, the weight warmed up over
    # the first quarter of training
    budget = args.synops if args.synops is not None else args.target * base.driven_synops
    if not budget > 0:
        print("synopsloss demo: the first run's network-driven synops are 0 (no spike reached a network-driven "
              "layer), so --target has nothing to be a fraction of: pass a budget with --synops", file=sys.stderr)
        return 1
    warmup = args.epochs / 4 if args.warmup is None else args.warmup
    net = SpikingCNN()
    net.load_state_dict(init)  # same initialisation (a fresh net: deepcopy escapes snntorch's reset)
    reg = train(net, tuple(data), desc="with synops loss",
                make_loss=lambda c: SynOpsLoss(c, target=budget, weight=warmup_weight(args.weight, warmup,
                                                                                      len(data[1]), args.batch_size)),
                **common)
    warm = f", warm-up {warmup:g} epochs" if warmup else ""
    print(f"\n2) cross-entropy + SynOpsLoss(target={budget:,.0f}, weight={args.weight:g}{warm}) "
          f"({reg.seconds:.0f} s): test accuracy {reg.accuracy:.1%}", flush=True)
    print(format_table(reg), flush=True)
    print()
    print(summary(base, reg, budget_of=None if args.synops is not None else args.target))
    if args.plot:
        try:
            _plot(base, reg, args.plot)
        except ImportError as err:
            print(f"no plot: {err} (pip install matplotlib, or pass --no-plot)")
        else:
            print(f"plot saved to {os.path.abspath(args.plot)}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run the demo with command-line arguments ``argv``."""
    from . import SuggestingParser

    parser = SuggestingParser(prog="synopsloss demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

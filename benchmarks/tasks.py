"""The two tasks of the trade-off benchmark: data (no download) and the spiking network for each.

* ``digits``: scikit-learn's 8x8 handwritten digits (1797, shipped with
  scikit-learn), pixel intensities rate-coded, the demo's spiking CNN
  (:class:`synopsloss.cli.digits.SpikingCNN`: conv 3x3 1->16, Leaky, maxpool 2,
  conv 3x3 16->32, Leaky, maxpool 2, linear 128->10). The split (80/20,
  stratified) depends on the seed, as in the demo.
* ``mnist1d``: MNIST-1D (Greydanus 2020; ``mnist1d.data.make_dataset`` with its
  default arguments generates the 5000 signals offline: 40 samples each, 10
  classes, the package's fixed 4000/1000 split). The signal is signed, so it is
  split on two input channels: ON ``min(x / 2, 1)`` where ``x > 0`` and OFF
  ``min(-x / 2, 1)`` where ``x < 0`` (the data have standard deviation 1; 2
  keeps 95% of the values below saturation). These intensities drive the first
  layer directly at every time step ("direct encoding": Bernoulli rate coding
  of 40 noisy samples into 8 frames capped a spiking CNN near 70-79%; the first
  layer is fed by the data either way, so its synops are not what training
  can lower). Network :class:`SpikingCNN1d`: conv1d 5 (2->32, padding 2),
  Leaky, conv1d 5 (32->64, padding 2), Leaky, maxpool 2, conv1d 3 (64->64,
  padding 1), Leaky, maxpool 2, linear 640->10, the readout averaged over time;
  it reaches ~85-88% without regularisation in 20 epochs at T=4.

Both: ``T`` time steps per sample, input ``[T, B, ...]``, snntorch
``Leaky(beta=0.9)`` neurons; ``conv1`` is fed by the data, so the later
synaptic layers (:attr:`Task.driven_layers`) are the network-driven ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Task", "TASKS", "load_task", "SpikingCNN1d", "direct_code", "mnist1d_intensities"]

Data = Tuple[Tensor, Tensor, Tensor, Tensor]


@dataclass
class Task:
    """A dataset (as intensities in [0, 1], to be rate-coded) and its network."""

    name: str
    data: Data
    make_net: Callable[[], nn.Module]
    driven_layers: Tuple[str, ...] = ("conv2", "fc")
    #: ``encode(x, time_steps, generator)`` -> the network's input ``[T, *x.shape]``
    encode: Callable[[Tensor, int, Optional[torch.Generator]], Tensor] = None  # type: ignore[assignment]
    #: the preset's time steps (``--time-steps`` overrides)
    time_steps: int = 8

    def __post_init__(self) -> None:
        if self.encode is None:
            from synopsloss.cli.digits import rate_code

            self.encode = rate_code


class SpikingCNN1d(nn.Module):
    """Three spiking 1-D conv layers and a linear readout; input ``[T, B, 2, 40]``, logits ``[B, 10]``.

    Example
    -------
    >>> import torch
    >>> SpikingCNN1d()(torch.zeros(3, 4, 2, 40)).shape
    torch.Size([4, 10])
    """

    def __init__(self, channels: Tuple[int, int, int] = (32, 64, 64), length: int = 40, beta: float = 0.9) -> None:
        super().__init__()
        import snntorch as snn

        c1, c2, c3 = channels
        self.conv1 = nn.Conv1d(2, c1, 5, padding=2)
        self.lif1 = snn.Leaky(beta=beta)
        self.conv2 = nn.Conv1d(c1, c2, 5, padding=2)
        self.lif2 = snn.Leaky(beta=beta)
        self.conv3 = nn.Conv1d(c2, c3, 3, padding=1)
        self.lif3 = snn.Leaky(beta=beta)
        self.fc = nn.Linear(c3 * (length // 4), 10)

    def forward(self, x: Tensor) -> Tensor:
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        out: Tensor = torch.zeros((), device=x.device)
        for t in range(x.shape[0]):
            s1, mem1 = self.lif1(self.conv1(x[t]), mem1)
            s2, mem2 = self.lif2(self.conv2(s1), mem2)
            s3, mem3 = self.lif3(self.conv3(F.max_pool1d(s2, 2)), mem3)
            out = out + self.fc(F.max_pool1d(s3, 2).flatten(1))
        return out / x.shape[0]


def direct_code(x: Tensor, time_steps: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """``x`` repeated at each of ``time_steps`` steps (direct encoding; ``generator`` unused).

    Example
    -------
    >>> import torch
    >>> direct_code(torch.tensor([[0.5, 0.0]]), 2).tolist()
    [[[0.5, 0.0]], [[0.5, 0.0]]]
    """
    return x.unsqueeze(0).expand(time_steps, *x.shape).contiguous()


def mnist1d_intensities(x: Tensor, scale: float = 2.0) -> Tensor:
    """Signed signals ``[N, L]`` -> ON/OFF spike probabilities ``[N, 2, L]`` in [0, 1].

    Example
    -------
    >>> import torch
    >>> mnist1d_intensities(torch.tensor([[1.0, -3.0, 0.0]]))
    tensor([[[0.5000, 0.0000, 0.0000],
             [0.0000, 1.0000, 0.0000]]])
    """
    zero = torch.zeros((), dtype=x.dtype)
    on = torch.where(x > 0, (x / scale).clamp(max=1), zero)
    off = torch.where(x < 0, (-x / scale).clamp(max=1), zero)
    return torch.stack([on, off], dim=1)


def _mnist1d() -> Data:
    import numpy as np
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()   # make_dataset reseeds numpy's global generator; leave it as it was
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    x_tr = mnist1d_intensities(torch.tensor(d["x"], dtype=torch.float32))
    x_te = mnist1d_intensities(torch.tensor(d["x_test"], dtype=torch.float32))
    return x_tr, torch.tensor(d["y"], dtype=torch.long), x_te, torch.tensor(d["y_test"], dtype=torch.long)


def load_task(name: str, seed: int = 0) -> Task:
    """The task ``name`` (``"digits"`` or ``"mnist1d"``); ``seed`` picks the digits split."""
    if name == "digits":
        from synopsloss.cli import digits as demo

        return Task("digits", demo.load_data(seed), demo.SpikingCNN)
    if name == "mnist1d":
        return Task("mnist1d", _mnist1d(), SpikingCNN1d, driven_layers=("conv2", "conv3", "fc"), encode=direct_code,
                    time_steps=4)
    raise ValueError(f"unknown task {name!r}; choose from {TASKS}")


TASKS = ("digits", "mnist1d")

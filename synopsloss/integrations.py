"""What the counter knows about layers that are not synapses.

One table per concern, filled from ``torch.nn`` and, when the user's program
has imported them, from snntorch and sinabs (looked up in ``sys.modules`` so
that importing synopsloss never imports either):

* :data:`POOL_DIVISORS`: average-pooling types and the divisor of each output
  position, to count spikes divided by a pool as spike events again;
* :func:`pass_through_types`: layers that only reshape or drop values (the
  pool correction follows a tensor through them);
* :func:`time_folding_batch`: sinabs ``*Squeeze`` layers, which know the
  number of samples of inputs shaped ``[B*T, ...]``;
* :func:`neuron_types`: spiking neuron layers (parameters, but no synapses).
"""

from __future__ import annotations

import sys
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Shape = Tuple[int, ...]
#: ``divisor(module, in_sample_shape, out_sample_shape) -> Tensor`` broadcastable to the output sample
PoolDivisor = Callable[[nn.Module, Shape, Shape], Tensor]

POOL_DIVISORS: Dict[type, PoolDivisor] = {}

_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _ntuple(v, n: int) -> Tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _avgpool_divisor(module: nn.Module, in_shape: Shape, out_shape: Shape, n: int) -> Tensor:
    """Divisor PyTorch used at each output position (kernel area, clipped windows, count_include_pad)."""
    if getattr(module, "divisor_override", None):
        return torch.tensor(float(module.divisor_override), dtype=torch.float64)
    ones = torch.ones((1, 1, *in_shape[-n:]), dtype=torch.float64)
    kw = dict(
        kernel_size=_ntuple(module.kernel_size, n), stride=_ntuple(module.stride or module.kernel_size, n),
        padding=_ntuple(module.padding, n), ceil_mode=module.ceil_mode,
    )
    if n == 1:  # avg_pool1d has no divisor_override: pool a [1, L] plane with a (1, k) window
        ones = ones.unsqueeze(-2)
        kw = {k: (v if k == "ceil_mode" else (1 if k != "padding" else 0,) + v) for k, v in kw.items()}
    pool = _AVG[max(n, 2)]
    valid = pool(ones, count_include_pad=True, divisor_override=1, **kw)  # in-bounds elements per window
    avg = pool(ones, count_include_pad=module.count_include_pad, **kw)  # valid / divisor
    div = (valid / avg)[0]
    return div.squeeze(-2) if n == 1 else div


def _adaptive_divisor(module: nn.Module, in_shape: Shape, out_shape: Shape, n: int) -> Tensor:
    """Window sizes of adaptive average pooling: end - start per output position and dim."""
    div = torch.ones((), dtype=torch.float64)
    for d in range(n):
        i, o = in_shape[-n + d], out_shape[-n + d]
        idx = torch.arange(o)
        start = (idx * i) // o
        end = -((-(idx + 1) * i) // o)
        size = (end - start).to(torch.float64)
        view = [1] * n
        view[d] = o
        div = div * size.reshape(view)
    return div


for _n, _cls in ((1, nn.AvgPool1d), (2, nn.AvgPool2d), (3, nn.AvgPool3d)):
    POOL_DIVISORS[_cls] = (lambda m, i, o, _n=_n: _avgpool_divisor(m, i, o, _n))
for _n, _cls in ((1, nn.AdaptiveAvgPool1d), (2, nn.AdaptiveAvgPool2d), (3, nn.AdaptiveAvgPool3d)):
    POOL_DIVISORS[_cls] = (lambda m, i, o, _n=_n: _adaptive_divisor(m, i, o, _n))

POOL_NDIM: Dict[type, int] = {
    nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
}


def find_pool(module: nn.Module) -> Optional[Tuple[PoolDivisor, int]]:
    """The divisor rule and number of spatial dims of an average-pooling module, if it is one."""
    for cls in type(module).__mro__:
        if cls in POOL_DIVISORS:
            return POOL_DIVISORS[cls], POOL_NDIM[cls]
    return None


def pass_through_types() -> Tuple[type, ...]:
    """Layers that reshape, copy or drop values without mixing neurons."""
    # ReLU keeps each value or zeroes it: events = relu(pooled) x divisor stays exact
    types = [nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.dropout._DropoutNd, nn.ReLU]
    sinabs_layers = sys.modules.get("sinabs.layers")
    if sinabs_layers is not None:
        for name in ("FlattenTime", "UnflattenTime"):
            if hasattr(sinabs_layers, name):
                types.append(getattr(sinabs_layers, name))
    return tuple(types)


def is_time_folding(module: nn.Module) -> bool:
    """Whether ``module`` is a sinabs ``*Squeeze`` layer (inputs shaped ``[B*T, ...]``)."""
    sinabs_layers = sys.modules.get("sinabs.layers")
    return sinabs_layers is not None and isinstance(module, getattr(sinabs_layers, "SqueezeMixin", ()))


def time_folding_batch(module: nn.Module, x: Tensor) -> Optional[int]:
    """Samples in ``x`` for sinabs ``*Squeeze`` layers fed ``[B*T, ...]`` (else ``None``)."""
    if not is_time_folding(module):
        return None
    batch_size = int(getattr(module, "batch_size", -1) or -1)
    if batch_size > 0:
        return batch_size
    steps = int(getattr(module, "num_timesteps", -1) or -1)
    if steps > 0 and x.dim() > 0:
        return x.shape[0] // steps
    return None


def neuron_types() -> Tuple[type, ...]:
    """Spiking neuron base classes of the SNN libraries the program has imported."""
    types = []
    snntorch = sys.modules.get("snntorch")
    if snntorch is not None and hasattr(snntorch, "SpikingNeuron"):
        types.append(snntorch.SpikingNeuron)
    sinabs_layers = sys.modules.get("sinabs.layers")
    if sinabs_layers is not None and hasattr(sinabs_layers, "StatefulLayer"):
        types.append(sinabs_layers.StatefulLayer)
    return tuple(types)

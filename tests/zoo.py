"""Small, CPU-fast SpikingJelly 2.0 and norse networks for the framework tests.

SpikingJelly's model zoo (Spikformer, Spike-driven Transformer, QKFormer) is
built at toy sizes (embed dim 32, one block per stage, T=2, 32x32 images:
a B=2 forward takes about 10-70 ms on one core). Their weights are initialised
with std 0.02 and their BatchNorms start as the identity, so in eval mode
no neuron ever fires; :func:`lively` puts the BatchNorms in training mode
(batch statistics) with a larger gain, so that every layer sees spikes.

Nothing is imported from spikingjelly / norse at module level: pytest imports
this file to collect doctests whether or not they are installed.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

T = 2
BATCH = 2
#: time steps of the norse fixtures (norse's default dt = 1 ms needs a few steps to charge)
NORSE_T = 8


def lively(model: nn.Module, gain: float = 3.0) -> nn.Module:
    """Make ``model``'s neurons fire: BatchNorms use batch statistics and scale by ``gain``."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            with torch.no_grad():
                m.weight.fill_(gain)
    return model


def spikformer(seed: int = 0) -> nn.Module:
    """SJ model-zoo Spikformer: 32x32 input, patch 4, embed 32, 2 heads, 1 block, T=2."""
    from spikingjelly.activation_based.model.spikformer import Spikformer

    torch.manual_seed(seed)
    return lively(Spikformer(T=T, in_channels=3, img_size_h=32, img_size_w=32, patch_size=4, num_classes=10,
                             embed_dims=32, num_heads=2, mlp_ratio=2.0, depths=1))


def spike_driven_transformer(seed: int = 0) -> nn.Module:
    """SJ model-zoo Spike-driven Transformer: embed 32, 2 heads, 1 block, T=2 (32x32 -> 2x2 tokens)."""
    from spikingjelly.activation_based.model.spike_driven_transformer import SpikeDrivenTransformer

    torch.manual_seed(seed)
    return lively(SpikeDrivenTransformer(T=T, in_channels=3, num_classes=10, embed_dims=32, num_heads=2, depths=1,
                                         mlp_ratio=2.0))


def qkformer(seed: int = 0) -> nn.Module:
    """SJ model-zoo QKFormer: embed 32 (stages 8/16/32), heads (1, 2, 2), one block per stage, T=2."""
    from spikingjelly.activation_based.model.qkformer import QKFormer

    torch.manual_seed(seed)
    return lively(QKFormer(T=T, in_channels=3, num_classes=10, embed_dims=32, num_heads=(1, 2, 2), depths=(1, 1, 1),
                           mlp_ratio=2.0))


def csnn(step_mode: str = "m", seed: int = 0) -> nn.Module:
    """SJ CSNN: layer.Conv2d -> LIFNode -> MaxPool -> layer.Conv2d -> LIFNode -> Flatten -> layer.Linear -> LIFNode.

    Input ``[T, B, 1, 12, 12]`` (``step_mode='m'``) or ``[B, 1, 12, 12]`` per step (``'s'``).
    """
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(seed)
    net = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, bias=False),
        neuron.LIFNode(tau=2.0, v_threshold=0.5),
        layer.MaxPool2d(2),
        layer.Conv2d(4, 6, 3, padding=1),
        neuron.LIFNode(tau=2.0, v_threshold=0.5),
        layer.Flatten(),
        layer.Linear(6 * 6 * 6, 10),
        neuron.LIFNode(tau=2.0, v_threshold=0.5),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(6.0)
    functional.set_step_mode(net, step_mode)
    return net


class NorseCellLoop(nn.Module):
    """norse LIFCell loop: ``[T, B, 16]`` -> Linear -> LIFCell -> Linear -> LIFCell, one cell call per step."""

    def __init__(self) -> None:
        super().__init__()
        import norse.torch as norse

        self.fc1 = nn.Linear(16, 12, bias=False)
        self.lif1 = norse.LIFCell()
        self.fc2 = nn.Linear(12, 5)
        self.lif2 = norse.LIFCell()

    def forward(self, x: Tensor) -> Tensor:
        s1 = s2 = None
        out = []
        for xt in x:
            z, s1 = self.lif1(self.fc1(xt), s1)
            z, s2 = self.lif2(self.fc2(z), s2)
            out.append(z)
        return torch.stack(out)


class NorseRecurrentLoop(nn.Module):
    """norse LIFRecurrentCell loop: ``[T, B, 16]`` -> LIFRecurrentCell(16, 12) -> Linear, one call per step."""

    def __init__(self) -> None:
        super().__init__()
        import norse.torch as norse

        self.rec = norse.LIFRecurrentCell(16, 12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: Tensor) -> Tensor:
        s = None
        out = []
        for xt in x:
            z, s = self.rec(xt, s)
            out.append(self.fc(z))
        return torch.stack(out)


def norse_cell_loop(seed: int = 0) -> nn.Module:
    """:class:`NorseCellLoop` with weights large enough to make the cells fire."""
    torch.manual_seed(seed)
    net = NorseCellLoop()
    with torch.no_grad():
        net.fc1.weight.mul_(20.0)
        net.fc2.weight.mul_(20.0)
    return net


def norse_sequence(seed: int = 0) -> nn.Module:
    """norse sequence net: ``[T, B, 16]`` -> Lift(Linear) -> LIF -> Lift(Linear) -> LIF (time-first modules)."""
    import norse.torch as norse

    torch.manual_seed(seed)
    net = norse.SequentialState(
        norse.Lift(nn.Linear(16, 12, bias=False)), norse.LIF(), norse.Lift(nn.Linear(12, 5)), norse.LIF()
    )
    with torch.no_grad():
        net[0].lifted_module.weight.mul_(20.0)
        net[2].lifted_module.weight.mul_(20.0)
    return net


def norse_recurrent_loop(seed: int = 0) -> nn.Module:
    """:class:`NorseRecurrentLoop` with weights large enough to make the cells fire."""
    torch.manual_seed(seed)
    net = NorseRecurrentLoop()
    with torch.no_grad():
        net.rec.input_weights.mul_(6.0)
        net.rec.recurrent_weights.mul_(6.0)
    return net


def image(seed: int = 1, spikes: bool = False, batch: int = BATCH) -> Tensor:
    """A ``[B, 3, 32, 32]`` image in [0, 1) (``spikes=True``: Bernoulli(0.3) spikes)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 32, 32, generator=g)
    return (x < 0.3).float() if spikes else x


def spike_train(shape: Tuple[int, ...], seed: int = 1, rate: float = 0.3) -> Tensor:
    """Bernoulli(``rate``) spikes of ``shape``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < rate).float()


#: name -> (builder, input builder, samples); the input is what ``model(x)`` takes
SJ_MODELS: Dict[str, Tuple[Callable[[], nn.Module], Callable[[], Tensor], int]] = {
    "spikformer": (spikformer, image, BATCH),
    "spikformer_spikes": (spikformer, lambda: image(spikes=True), BATCH),
    "spike_driven_transformer": (spike_driven_transformer, image, BATCH),
    "qkformer": (qkformer, image, BATCH),
    "csnn_multi_step": (lambda: csnn("m"), lambda: spike_train((T, BATCH, 1, 12, 12)), BATCH),
}

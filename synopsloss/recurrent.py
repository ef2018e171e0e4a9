"""Synapse rules for recurrent ANN layers: ``nn.RNN/LSTM/GRU`` and their ``*Cell`` variants.

These layers are no single linear map of one input, so they are counted per
call (``register_rule(..., counts=True)`` returning an :class:`~synopsloss.maps.OpCounts`).

Cells (``RNNCell``, ``LSTMCell``, ``GRUCell``)
    ``dense`` and the effective operations follow NeuroBench 2.3's
    ``recurrent_cell_macs`` formulas exactly (checked live in the tests):

    * RNN: ``sum(W_ih' x') + sum(W_hh' h')`` where ``'`` means "binarised"
      (nonzero -> 1; *dense*: every entry 1);
    * LSTM: the gate products ``W_ih' x' + W_hh' h'`` plus one op per nonzero
      term of ``c = f*c + i*g`` and of ``h = o*c`` (NeuroBench's counting of the
      element-wise products, with the gate pre-activations including the biases);
    * GRU: the gate products plus NeuroBench's element-wise terms for
      ``r*(W_hn h + b_hn)``, ``(1-z)*n`` and ``z*h``.

    The hidden-state term is counted when a state is passed (positionally, as
    NeuroBench sees it, or as ``hx=``). Two NeuroBench quirks are kept so that
    the numbers agree: for ``LSTMCell`` the *dense* count binarises ``(h, c)``
    instead of setting them to one (its nested-tuple handling), and for
    ``GRUCell`` the candidate term uses ``W_hn h`` where ``W_in x`` would be
    expected. Called without a state, NeuroBench counts only the first sample
    of the batch (it indexes ``inputs[0]`` of the input tensor) and crashes for
    LSTM / GRU cells; we count every sample with the same formulas (equal for
    one sample). Where NeuroBench crashes (``GRUCell`` with ``bias=False``)
    the formulas are evaluated with zero biases. The whole call's operations are ACs when every value of
    ``x`` is in {-1, 0, 1}, MACs otherwise (NeuroBench checks ``x`` only).

Full layers (``RNN``, ``LSTM``, ``GRU``; any ``num_layers``, ``bidirectional``, ``batch_first``, LSTM ``proj_size``)
    NeuroBench does not count these (its ``recurrent_layer_macs`` raises). We
    count a full layer as its unrolled cells: layer ``l``, direction ``d`` and
    step ``t`` is one cell call with input ``x_t`` (the data for ``l = 0``, the
    concatenated outputs of layer ``l - 1`` otherwise) **and** its state
    ``h_{t-1}`` (``c_{t-1}``), the initial state being the given ``hx`` or zeros
    (so the recurrent weights are always part of *dense*). The LSTM projection
    ``h = W_hr m`` adds ``sum(W_hr' m')`` effective / ``proj_size * hidden_size``
    dense ops per step. The states are recomputed from the layer's weights with
    the PyTorch equations (one extra forward pass per call; with autograd
    enabled the recomputation is differentiable). Dropout between layers is not
    reproduced in training mode (a warning says so): counts are those of the
    network without dropout. The operations are ACs only when every layer's
    input is spikes (a single layer fed spikes), MACs otherwise.

Synops (differentiable) of every variant: ``sum(|x| * fan-out of W_ih) + sum(|h| *
fan-out of W_hh)`` (+ ``m * fan-out of W_hr``), each input value times its
number of nonzero outgoing weights; biases and element-wise gate products are
not synapses.

Example
-------
>>> import torch, synopsloss as sl
>>> cell = torch.nn.RNNCell(3, 2, bias=False)
>>> with sl.SynOpsCounter(cell) as counter:
...     _ = cell(torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([[0.0, 1.0]]))
...     counter.snapshot().per_layer()[""]["eff_acs"]
6.0
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .maps import OpCounts, magnitude

__all__ = ["neurobench_cell_ops", "cell_counts", "layer_counts"]





def _bin(t: Tensor) -> Tensor:
    return (t != 0).to(torch.float64)


def neurobench_cell_ops(
    kind: str,
    x: Tensor,
    h: Optional[Tensor],
    c: Optional[Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor],
    b_hh: Optional[Tensor],
) -> Tensor:
    """NeuroBench's operation count of one recurrent-cell call (0-dim float64 tensor).

    All arguments must already be binarised (0/1, float64) the way NeuroBench
    does it: effective counts use ``tensor != 0``, dense counts ones.

    Parameters
    ----------
    kind
        ``"rnn"``, ``"lstm"`` or ``"gru"``.
    x
        ``[N, input_size]``.
    h, c
        ``[N, hidden_size]`` states, ``None`` when the cell was called without them
        (``c`` only for LSTM).
    w_ih, w_hh
        ``[G * hidden, input_size]`` and ``[G * hidden, hidden]``.
    b_ih, b_hh
        ``[G * hidden]`` or ``None`` (no bias).

    Example
    -------
    >>> import torch
    >>> ones = lambda *s: torch.ones(*s, dtype=torch.float64)
    >>> int(neurobench_cell_ops("rnn", ones(1, 3), ones(1, 2), None, ones(2, 3), ones(2, 2), None, None))
    10
    """
    in_states = h is not None
    out_ih = x @ w_ih.T
    out_hh = h @ w_hh.T if in_states else torch.zeros_like(out_ih)
    zero = torch.zeros(out_ih.shape[-1], dtype=out_ih.dtype, device=out_ih.device)
    bi = b_ih if b_ih is not None else zero
    bh = b_hh if b_hh is not None else zero
    out = out_ih + out_hh
    ops = out.sum()
    if kind == "rnn":
        return ops
    if kind == "lstm":
        gates = _bin(out + bi + bh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c1 = f * c + i * g if (in_states and c is not None) else i * g
        ops = ops + c1.sum()
        return ops + _bin(o * _bin(c1)).sum()
    if kind == "gru":
        rzn = out + bi + bh
        r, z, _ = rzn.chunk(3, dim=-1)
        hh_n = out_hh.chunk(3, dim=-1)[2]
        n_hh_term = _bin(_bin(r) * _bin(hh_n + bh.chunk(3)[2]))
        ops = ops + n_hh_term.sum()
        n = _bin(hh_n + bi.chunk(3)[2] + n_hh_term)  # NeuroBench: out_hh (sic) + b_ih + term
        t1 = _bin(_bin(1 - z) * n)
        t2 = _bin(_bin(z) * h) if in_states else torch.zeros_like(t1)
        return ops + t1.sum() + t2.sum()
    raise ValueError(f"unknown recurrent cell kind {kind!r}; expected 'rnn', 'lstm' or 'gru'")


def _kind(module: nn.Module) -> str:
    if isinstance(module, (nn.LSTM, nn.LSTMCell)):
        return "lstm"
    if isinstance(module, (nn.GRU, nn.GRUCell)):
        return "gru"
    return "rnn"


def _spiking(x: Tensor) -> Tensor:
    return torch.all((x == 0) | (x.abs() == 1))


def _fanout(w: Tensor) -> Tensor:
    """Nonzero outgoing weights per input neuron (column counts), float64."""
    return (w.detach() != 0).sum(0).to(torch.float64)


def _ops_pair(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, state_given: bool) -> Tuple[Tensor, Tensor]:
    """(effective, dense) NeuroBench counts for a batch of cell steps."""
    with torch.no_grad():
        eff = neurobench_cell_ops(
            kind, _bin(x), _bin(h) if state_given else None,
            _bin(c) if (state_given and c is not None) else None,
            _bin(w_ih), _bin(w_hh),
            _bin(b_ih) if b_ih is not None else None, _bin(b_hh) if b_hh is not None else None,
        )
        ones = lambda t: torch.ones(t.shape, dtype=torch.float64, device=t.device)  # noqa: E731
        if state_given:
            # NeuroBench's all-ones copy sets a top-level state to one, but only binarises
            # the nested (h, c) tuple of an LSTM cell
            hd = _bin(h) if kind == "lstm" else ones(h)
            cd = _bin(c) if (kind == "lstm" and c is not None) else None
        else:
            hd = cd = None
        dense = neurobench_cell_ops(
            kind, ones(x), hd, cd, ones(w_ih), ones(w_hh),
            ones(b_ih) if b_ih is not None else None, ones(b_hh) if b_hh is not None else None,
        )
    return eff, dense


def cell_counts(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> OpCounts:
    """Count synops for nn.RNNCell / LSTMCell / GRUCell with NeuroBench's cell formulas."""
    kind = _kind(module)
    if not args or not isinstance(args[0], Tensor):
        raise ValueError(f"{type(module).__name__} must be called with its input tensor as first argument")
    x = args[0]
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    batched = x.dim() == 2
    if not batched:
        x = x.unsqueeze(0)
    h = c = None
    if hx is not None:
        if kind == "lstm":
            h, c = hx
        else:
            h = hx
        h = h if batched else h.unsqueeze(0)
        c = None if c is None else (c if batched else c.unsqueeze(0))
    w_ih, w_hh = module.weight_ih, module.weight_hh
    b_ih = module.bias_ih if module.bias else None
    b_hh = module.bias_hh if module.bias else None
    eff, dense = _ops_pair(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, hx is not None)
    f_ih = _fanout(w_ih).to(x.device)
    synops = (magnitude(x.to(torch.float64)) * f_ih).sum()
    if h is not None:
        synops = synops + (magnitude(h.to(torch.float64)) * _fanout(w_hh).to(x.device)).sum()
    with torch.no_grad():
        return OpCounts(
            synops=synops, dense=dense, effective=eff, spiking=_spiking(x), rows=x.shape[0],
            in_shape=(module.input_size,), out_shape=(module.hidden_size,),
            input_sum=x.detach().to(torch.float64).sum(), input_nonzero=(x != 0).sum().to(torch.float64),
            in_neurons=module.input_size,
        )


def _step(kind: str, x: Tensor, h: Tensor, c: Optional[Tensor], w: dict, nonlinearity: str):
    """One PyTorch recurrent step for a batch: returns (h_new, c_new, m) (m: LSTM pre-projection output)."""
    gi = F.linear(x, w["w_ih"], w["b_ih"])
    gh = F.linear(h, w["w_hh"], w["b_hh"])
    if kind == "rnn":
        a = gi + gh
        return (torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)), None, None
    if kind == "lstm":
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        m = torch.sigmoid(o) * torch.tanh(c_new)
        h_new = F.linear(m, w["w_hr"]) if w["w_hr"] is not None else m
        return h_new, c_new, m
    ir, iz, in_ = gi.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(in_ + r * hn)
    return (1 - z) * n + z * h, None, None


_DROPOUT_WARNED = set()


def layer_counts(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> OpCounts:
    """Count synops for nn.RNN / LSTM / GRU as their unrolled cells (see the module docstring)."""
    kind = _kind(module)
    if not args:
        raise ValueError(f"{type(module).__name__} must be called with its input tensor as first argument")
    x = args[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        raise ValueError(
            f"synopsloss cannot count {type(module).__name__} on a PackedSequence (its padding is not known "
            "per step); pass a padded tensor, or wrap the call in counter.paused()"
        )
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    if module.training and module.dropout > 0 and module.num_layers > 1 and id(module) not in _DROPOUT_WARNED:
        _DROPOUT_WARNED.add(id(module))
        warnings.warn(
            f"synopsloss counts {type(module).__name__}(dropout={module.dropout}) in training mode without "
            "its inter-layer dropout: the operations of layers >= 1 are those of the eval network",
            stacklevel=2,
        )
    batched = x.dim() == 3
    if not batched:
        x = x.unsqueeze(1)  # [T, 1, F]
    elif module.batch_first:
        x = x.transpose(0, 1)  # [T, B, F]
    T, B = x.shape[0], x.shape[1]
    D = 2 if module.bidirectional else 1
    hidden = module.hidden_size
    h_out = module.proj_size if getattr(module, "proj_size", 0) > 0 else hidden
    h0 = c0 = None
    if hx is not None:
        h0, c0 = hx if kind == "lstm" else (hx, None)
        if not batched:
            h0 = h0.unsqueeze(1)
            c0 = None if c0 is None else c0.unsqueeze(1)
    layer_in = x.to(torch.float64) if not x.is_floating_point() else x
    dtype = torch.float64
    synops = torch.zeros((), dtype=dtype, device=x.device)
    eff = torch.zeros((), dtype=dtype, device=x.device)
    dense = torch.zeros((), dtype=dtype, device=x.device)
    all_spiking = _spiking(x)
    for layer in range(module.num_layers):
        if layer > 0:
            all_spiking = all_spiking & _spiking(layer_in)
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w = {
                "w_ih": getattr(module, "weight_ih" + sfx), "w_hh": getattr(module, "weight_hh" + sfx),
                "b_ih": getattr(module, "bias_ih" + sfx) if module.bias else None,
                "b_hh": getattr(module, "bias_hh" + sfx) if module.bias else None,
                "w_hr": getattr(module, "weight_hr" + sfx, None) if h_out != hidden else None,
            }
            idx = layer * D + d
            h = h0[idx] if h0 is not None else layer_in.new_zeros((B, h_out))
            c = (c0[idx] if c0 is not None else layer_in.new_zeros((B, hidden))) if kind == "lstm" else None
            steps = range(T - 1, -1, -1) if d else range(T)
            hs, h_prev, c_prev, ms = [None] * T, [], [], []
            for t in steps:
                h_prev.append(h)
                c_prev.append(c)
                h, c, m = _step(kind, layer_in[t], h, c, w, getattr(module, "nonlinearity", "tanh"))
                hs[t] = h
                ms.append(m)
            xs = layer_in if not d else layer_in.flip(0)
            xs = xs.reshape(T * B, -1)
            hp = torch.stack(h_prev).reshape(T * B, -1)
            cp = torch.stack(c_prev).reshape(T * B, -1) if kind == "lstm" else None
            synops = synops + (magnitude(xs.to(dtype)) * _fanout(w["w_ih"]).to(x.device)).sum()
            synops = synops + (magnitude(hp.to(dtype)) * _fanout(w["w_hh"]).to(x.device)).sum()
            e, dn = _ops_pair(kind, xs, hp, cp, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], True)
            eff, dense = eff + e, dense + dn
            if w["w_hr"] is not None:
                mm = torch.stack(ms).reshape(T * B, -1)
                synops = synops + (magnitude(mm.to(dtype)) * _fanout(w["w_hr"]).to(x.device)).sum()
                with torch.no_grad():
                    eff = eff + (_bin(mm) @ _bin(w["w_hr"]).T).sum()
                    dense = dense + float(T * B * w["w_hr"].numel())
            outs.append(torch.stack(hs))
        layer_in = torch.cat(outs, dim=-1) if D > 1 else outs[0]
    with torch.no_grad():
        return OpCounts(
            synops=synops, dense=dense, effective=eff, spiking=all_spiking, rows=T * B, samples=B,
            in_shape=(module.input_size,), out_shape=(D * h_out,),
            input_sum=x.detach().to(dtype).sum(), input_nonzero=(x != 0).sum().to(dtype),
            in_neurons=module.input_size,
        )


def pooled_events(module: nn.Module, x: Tensor, counts: OpCounts, scale: Tensor, integer: Tensor) -> OpCounts:
    """``counts`` of a torch recurrent layer or cell whose input ``x`` is an average-pool output of spike counts:
    its input synapses take the spike events (each value times its pool divisor ``scale``, per input neuron
    ``[n]`` or per value ``[rows, n]``; applied where the 0-dim bool ``integer`` says the pool read integers), as a
    ``Linear`` does; the recurrent synapses and the effective and dense ops (nonzero patterns) are unchanged.

    Example
    -------
    >>> rnn = nn.RNNCell(2, 3)
    >>> x = torch.tensor([[0.5, 0.0]])  # one spike in a window of two
    >>> c = pooled_events(rnn, x, cell_counts(rnn, (x,), {}, None), torch.tensor([2.0, 2.0]), torch.tensor(True))
    >>> float(c.synops)  # one event over 3 synapses
    3.0
    """
    n = module.input_size
    flat = x.reshape(-1, n).to(torch.float64)
    if isinstance(module, nn.RNNCellBase):
        fan = _fanout(module.weight_ih)
    else:  # the first layer reads the input, in each direction
        fan = sum(_fanout(getattr(module, "weight_ih_l0" + s))
                  for s in ("", "_reverse")[:2 if module.bidirectional else 1])
    extra = (magnitude(flat) * (scale.to(torch.float64) - 1) * fan.to(x.device)).sum()
    return dataclasses.replace(counts, synops=counts.synops + extra * integer.to(torch.float64))


# --------------------------------------------------------------------------- SNN recurrent synapses

def one_to_one_fanout(module: nn.Module, w01: Tensor, in_shape, out_shape) -> Tensor:
    """Count synops for snntorch's RecurrentOneToOne: spike x V, one synapse per neuron where V != 0.

    snntorch's ``RLeaky`` / ``RSynaptic`` with ``all_to_all=False`` multiply
    the previous spikes element-wise by ``V``. Their ``all_to_all=True``
    variant uses an ``nn.Linear`` / ``nn.Conv2d`` (``.recurrent``), and
    sinabs' ``*Recurrent`` layers their ``rec_connect`` module: those are
    counted by the ordinary rules.
    """
    return w01.expand(in_shape).clone() if w01.dim() else w01.reshape(()).expand(in_shape).clone()


def one_to_one_ndim(module: nn.Module) -> int:
    """One sample of a RecurrentOneToOne is shaped like ``V`` (at least one dim)."""
    return max(int(torch.as_tensor(module.V).dim()), 1)

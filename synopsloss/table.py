"""The per-layer statistics table: :class:`LayerRow` records, :class:`SynOpsTable` (rendering, export) and :func:`compare`.

Built by :meth:`SynOpsCounter.table` (see :mod:`synopsloss.report`).

One row per counted layer, in forward order (a synaptic layer that did not run: zeros, named in a
warning), plus a total row. Synaptic
layers carry the counter's numbers; neuron layers (snntorch / sinabs) their
firing rates, membrane updates and neuron operations; layers without synapses
(BatchNorm -- folded into the preceding weights on hardware --, dropout,
pooling, upsampling, flatten, activations) appear as what they are. Every
number is *per sample* over all time steps unless its name says otherwise.

Columns (attributes of :class:`LayerRow`; the keys of :data:`COLUMNS`):

==========================  ===================================================================
``name`` / ``type``         qualified module name / class; ``kind``: ``synaptic``,
                            ``recurrent synapses``, ``neuron``, ``activation``, ``norm (folded)``,
                            ``dropout``, ``pooling``, ``upsampling``, ``reshape``, ...
``data_fed``                the layer reads the model's input directly: its synops are set by the
                            data, not by training (marked ``*`` in the rendered tables)
``in_shape``, ``out_shape`` one sample's input / output shape (synaptic layers: the rule's sample
                            dims; other layers: the call's shape without dim 0)
``neurons``                 output neurons (synaptic: one sample of the output; neuron layers: neurons)
``fanout_mean/max``         effective fan-out over the input neurons (nonzero weight taps)
``in_rate``                 input events per input neuron per time step (input sum / rows / neurons)
``time_steps``              time steps the layer ran (``SynOpsCounter.time_steps``; tokens are not steps)
``synops``                  input magnitude x effective fan-out; ``synops_per_step`` = ``synops / time_steps``;
                            ``synops_per_s`` = ``synops_per_step / dt`` (``dt`` in seconds per step)
``dense``, ``eff_macs``,    NeuroBench's ``Dense``, ``Effective_MACs``, ``Effective_ACs``
``eff_acs``
``neuron_ops(_dense)``,     NeuroBench's ``NeuronOperations`` (see :mod:`synopsloss.neurons`)
``membrane_updates(_dense)``
``firing_rate``             output spikes per neuron per time step; ``density``: nonzero outputs fraction
``synops_estimate``         papers' firing rate x T x FLOPs (``estimate_error``, ``energy_paper``: see
                            :mod:`synopsloss.report`)
``share``                   the layer's share of the total synops
``energy``                  joules per sample under the table's energy model (:mod:`synopsloss.energy`)
==========================  ===================================================================

Rendering
---------
``str(table)`` is ``table.render()``: the ``"compact"`` preset, which fits
120 characters for typical networks. ``render``, :meth:`SynOpsTable.to_markdown`
and :meth:`SynOpsTable.to_latex` take ``columns=``: a preset name
(:data:`PRESETS`: ``"compact"``, ``"neurobench"``, ``"neurons"``, ``"energy"``,
``"full"``, ``"blocks"``) or a list of column keys. A preset leaves out the
columns that hold nothing for this table (``synops_per_s`` without ``dt``,
``energy`` without an energy model); an explicit list shows every column it
names, the layer name first.

Blocks
------
:meth:`SynOpsTable.blocks` (``render(view="blocks")``) puts each synaptic
layer and the neuron or activation layer it feeds on one row. Pairing rule,
in forward order: after each ``synaptic`` row, the first ``neuron`` or
``activation`` row that comes before the next ``synaptic`` row, skipping the
rows that hold no counts (dropout, reshape, norm, pooling, upsampling,
identity, ...); a neuron or activation row is taken at most once. A neuron's
own recurrent synapses (``recurrent synapses`` rows named ``<neuron>.*``) are
added to the neuron's block. Synaptic layers with no such neuron (a readout)
and neuron layers no synaptic layer claims are blocks of their own; rows that
hold no counts are left out. A block's synops, dense and effective counts are
those of its synaptic rows; its firing rate, membrane updates and neuron
operations those of its neuron; its share and energy the sums.

Comparing two tables
--------------------
:func:`compare` puts two tables (e.g. before and after training with the
synops loss) side by side: synops per layer, their ratio ``before / after``,
firing rates and energy, with the total and (when a layer is fed by the data)
the network-driven synops.

Examples
--------
>>> import torch, synopsloss as sl
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.ReLU())
>>> counter = sl.SynOpsCounter(net)
>>> _ = net(torch.tensor([[1.0, 0.0, 1.0, 0.0]]))
>>> table = counter.table()
>>> [(r.name, r.kind) for r in table], table["0"].synops
([('0', 'synaptic'), ('1', 'activation')], 6.0)
>>> print(table.render(columns=["synops", "dense"]))
Layer  Synops  Dense
--------------------
0 *         6     12
1           -      -
====================
Total       6     12
Per sample, averaged over 1 sample(s).
* fed directly by the data: its synops are set by the input, not by training.
"""

from __future__ import annotations

import csv
import io
import math
import textwrap
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from torch import Tensor

__all__ = ["LayerRow", "BlockRow", "SynOpsTable", "ComparisonRow", "SynOpsComparison", "compare", "COLUMNS", "PRESETS"]


@dataclass
class LayerRow:
    """One row of a :class:`SynOpsTable` (``None``: does not apply to this layer)."""

    name: str
    type: str
    kind: str
    data_fed: bool = False
    in_shape: Optional[Tuple[int, ...]] = None
    out_shape: Optional[Tuple[int, ...]] = None
    neurons: Optional[int] = None
    in_neurons: Optional[int] = None
    weights: Optional[int] = None
    biases: Optional[int] = None  # bias entries (0: none); the Lemaire model reads them once per output and step
    formal: bool = False  # the equivalent ANN layer of calibration.break_even (priced by Lemaire's formal equations)
    fanout_mean: Optional[float] = None
    fanout_max: Optional[float] = None
    in_rate: Optional[float] = None
    nonzero_rate: Optional[float] = None  # nonzero inputs per input neuron per time step (in_rate counts events)
    input_events: Optional[float] = None
    output_values: Optional[float] = None  # output values per sample over all time steps (x tokens: rows per step)
    time_steps: Optional[float] = None
    synops: Optional[float] = None
    synops_per_step: Optional[float] = None
    synops_per_s: Optional[float] = None
    dense: Optional[float] = None
    eff_macs: Optional[float] = None
    eff_acs: Optional[float] = None
    neuron_ops: Optional[float] = None
    neuron_ops_dense: Optional[float] = None
    membrane_updates: Optional[float] = None
    membrane_updates_dense: Optional[float] = None
    spikes: Optional[float] = None
    firing_rate: Optional[float] = None
    density: Optional[float] = None
    leaky: Optional[bool] = None
    share: Optional[float] = None
    energy: Optional[float] = None
    energy_parts: Dict[str, float] = field(default_factory=dict)
    synops_estimate: Optional[float] = None  # papers' firing rate x T x FLOPs (see synopsloss.report)
    estimate_error: Optional[float] = None  # synops_estimate / synops - 1
    energy_paper: Optional[float] = None  # 0.9 pJ x estimate (4.6 pJ x dense for non-spike inputs)
    ann_energy: Optional[float] = None  # the equivalent quantised ANN layer (synopsloss.calibration.break_even)
    break_even_rate: Optional[float] = None  # input spike rate below which the layer beats that ANN
    synops_p50: Optional[float] = None  # per-sample synops: median over the samples (counter per_sample=True)
    synops_p95: Optional[float] = None
    synops_p99: Optional[float] = None
    synops_max: Optional[float] = None


@dataclass
class BlockRow(LayerRow):
    """One row of the block view (:meth:`SynOpsTable.blocks`): a synaptic layer and the neuron it feeds.

    Attributes
    ----------
    synaptic : str or None
        Name of the block's synaptic layer (``None``: a neuron layer on its own).
    neuron : str or None
        Name of its neuron or activation layer (``None``: a synaptic layer on its own).
    recurrent : tuple of str
        The neuron's recurrent synapses, whose counts are part of the block's.
    """

    synaptic: Optional[str] = None
    neuron: Optional[str] = None
    recurrent: Tuple[str, ...] = ()


# key -> (title, format, description); the keys are LayerRow attributes
COLUMNS: Dict[str, Tuple[str, str, str]] = {
    "name": ("Layer", "name", "qualified module name; `*`: fed directly by the data"),
    "type": ("Type", "str", "module class"),
    "kind": ("Kind", "str", "synaptic, recurrent synapses, neuron, activation, norm (folded), dropout, ..."),
    "in_shape": ("In shape", "shape", "one sample's input shape"),
    "out_shape": ("Out shape", "shape", "one sample's output shape"),
    "neurons": ("Neurons", "int", "output neurons"),
    "in_neurons": ("In neurons", "int", "input neurons of a synaptic layer"),
    "weights": ("Weights", "int", "weights of a synaptic layer"),
    "fanout_mean": ("Fan-out mean", "num", "mean effective fan-out (nonzero weight taps) of the input neurons"),
    "fanout_max": ("Fan-out max", "num", "largest effective fan-out"),
    "in_rate": ("In rate", "rate", "input events per input neuron per time step (a count of k is k events)"),
    "nonzero_rate": ("Nonzero rate", "rate", "nonzero inputs per input neuron per time step (a count of k is 1)"),
    "input_events": ("In events", "si", "nonzero inputs per sample"),
    "time_steps": ("T", "num", "time steps the layer ran per sample (tokens are not time steps)"),
    "synops": ("Synops", "si", "input magnitude x effective fan-out, per sample"),
    "synops_per_step": ("Synops/step", "si", "synops per sample per time step"),
    "synops_per_s": ("Synops/s", "si", "synops per sample per second (needs dt)"),
    "synops_estimate": ("Est. fr*T*FLOPs", "si", "the papers' estimate: input firing rate x T x dense ops per step"),
    "estimate_error": ("Est. error", "pct", "how far the estimate is from the exact synops (estimate / synops - 1)"),
    "dense": ("Dense", "si", "NeuroBench Dense: every weight tap of every input neuron"),
    "eff_macs": ("Eff MACs", "si", "NeuroBench Effective_MACs: nonzero input x nonzero weight, non-spiking input"),
    "eff_acs": ("Eff ACs", "si", "accumulates: nonzero input x nonzero weight for spikes in {-1, 0, 1}; spike "
                "count x nonzero weight for integer counts (one per event)"),
    "synops_p50": ("Synops p50", "si", "median over the samples of each sample's synops (per_sample=True)"),
    "synops_p95": ("Synops p95", "si", "95th percentile over the samples of each sample's synops"),
    "synops_p99": ("Synops p99", "si", "99th percentile over the samples of each sample's synops"),
    "synops_max": ("Synops max", "si", "the largest synops of one sample"),
    "neuron_ops": ("Neuron ops", "si", "NeuroBench NeuronOperations (effective)"),
    "neuron_ops_dense": ("Neuron ops dense", "si", "NeuroBench NeuronOperations (dense)"),
    "membrane_updates": ("Mem updates", "si", "membrane updates (effective)"),
    "membrane_updates_dense": ("Mem updates dense", "si", "membrane updates (dense: neurons x time steps)"),
    "spikes": ("Spikes", "si", "output spikes per sample"),
    "firing_rate": ("Out rate", "rate", "output spikes per neuron per time step"),
    "density": ("Density", "rate", "fraction of nonzero outputs"),
    "share": ("Share", "pct", "share of the total synops"),
    "energy": ("Energy", "joule", "joules per sample under the table's energy model"),
    "energy_paper": ("Energy (paper)", "joule", "0.9 pJ x estimate (4.6 pJ x dense for non-spike inputs), per sample"),
    "ann_energy": ("ANN energy", "joule", "the equivalent quantised ANN layer (synopsloss.calibration.break_even)"),
    "break_even_rate": ("Break-even", "rate", "input spike rate below which the layer costs less than that ANN"),
}

# name -> column keys; a preset leaves out the columns that are empty for the table at hand
PRESETS: Dict[str, Tuple[str, ...]] = {
    "compact": ("name", "type", "kind", "synops", "synops_per_s", "dense", "eff_macs", "eff_acs", "firing_rate",
                "share", "energy"),
    "neurobench": ("name", "type", "dense", "eff_macs", "eff_acs", "neuron_ops", "neuron_ops_dense"),
    "neurons": ("name", "type", "neurons", "time_steps", "spikes", "firing_rate", "density", "membrane_updates",
                "membrane_updates_dense", "neuron_ops", "neuron_ops_dense"),
    "energy": ("name", "type", "synops", "eff_acs", "eff_macs", "neuron_ops", "membrane_updates", "share", "energy"),
    "full": ("name", "type", "kind", "in_shape", "neurons", "fanout_mean", "fanout_max", "in_rate", "time_steps",
             "synops", "synops_per_step", "synops_per_s", "synops_estimate", "dense", "eff_macs", "eff_acs",
             "neuron_ops", "membrane_updates", "firing_rate", "share", "energy"),
    "paper": ("name", "type", "in_rate", "time_steps", "synops", "synops_estimate", "estimate_error", "energy",
              "energy_paper"),
    "break_even": ("name", "type", "in_rate", "time_steps", "energy", "ann_energy", "break_even_rate"),
    "distribution": ("name", "type", "synops", "synops_p50", "synops_p95", "synops_p99", "synops_max"),
    "blocks": ("name", "type", "synops", "synops_per_s", "dense", "eff_macs", "eff_acs", "firing_rate", "neuron_ops",
               "share", "energy"),
}

_LEFT = ("name", "str", "shape")
_SI = [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
_J = [(1.0, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ"), (1e-12, "pJ"), (1e-15, "fJ")]
_WIDTH = 120  # footer lines are wrapped at this width
_COUNT_KINDS = ("synaptic", "recurrent synapses", "neuron", "activation")


def _in_unit(v: float, units: List[Tuple[float, str]], sep: str, base: str) -> str:
    """``v`` at 3 significant digits in the largest unit it reaches (``units``: descending ``(scale, name)``); a
    value that rounds up to 1000 of its unit moves to the next one (999.6 pJ: ``1 nJ``, not ``1e+03 pJ``)."""
    i = next((i for i, (scale, _) in enumerate(units) if abs(v) >= scale), len(units) - 1)
    scale, unit = units[i]
    if abs(float(f"{v / scale:.3g}")) >= 1000 and i > 0:
        scale, unit = units[i - 1]
    x = v / scale
    if unit == "" and x == int(x) and abs(x) < 1000:
        return str(int(x))
    return f"{x:.3g}{sep}{unit}"


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind in ("str", "name"):
        return str(value)
    if kind == "shape":
        return "[" + ", ".join(str(int(v)) for v in value) + "]"
    if kind == "int":
        return f"{int(value):,}"
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "rate":
        return f"{v:.4f}"
    if kind == "ratio":
        return f"{v:.2f}x"
    if kind == "joule":
        if v == 0:
            return "0 J"
        return _in_unit(v, _J + [(1e-15, "fJ")], " ", "J")
    if kind == "si":
        return _in_unit(v, _SI + [(1.0, "")], "", "")
    return f"{v:.3g}" if v != int(v) else str(int(v))


# ---------------------------------------------------------------------- shared renderers
# A rendered table is: titles, formats (for alignment), body rows, tail rows (after a rule: totals), footer lines.


def _render_text(titles: List[str], kinds: List[str], body: List[List[str]], tail: List[List[str]],
                 footer: List[str]) -> str:
    widths = [max(len(x) for x in col) for col in zip(titles, *body, *tail)]

    def line(cells: List[str]) -> str:
        parts = [c.ljust(w) if k in _LEFT else c.rjust(w) for c, w, k in zip(cells, widths, kinds)]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(titles))
    out = [line(titles), rule] + [line(b) for b in body] + ["=" * len(rule)] + [line(t) for t in tail]
    for note in footer:
        out.extend(textwrap.wrap(note, _WIDTH, break_on_hyphens=False) or [""])
    return "\n".join(out)


def _md_escape(s: str) -> str:
    """A layer name as Markdown text: the characters that would format it (emphasis, code, math, HTML) escaped."""
    for ch in "\\|*_`$<>[]":
        s = s.replace(ch, "\\" + ch)
    return s


def _render_markdown(titles: List[str], kinds: List[str], body: List[List[str]], tail: List[List[str]],
                     footer: List[str]) -> str:
    lines = ["| " + " | ".join(_md_escape(t) for t in titles) + " |",
             "|" + "|".join("---" if k in _LEFT else "---:" for k in kinds) + "|"]
    for r in body + tail:
        lines.append("| " + " | ".join(_md_escape(c) for c in r) + " |")
    return "\n".join(lines + [""] + [_md_escape(f) for f in footer]) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def _tex_cell(s: str, kind: str) -> str:
    out = _tex_escape(s)
    if kind == "joule" and out.endswith(" uJ"):
        out = out[:-3] + r" $\mu$J"
    return out


def _render_latex(titles: List[str], kinds: List[str], body: List[List[str]], tail: List[List[str]],
                  footer: List[str], caption: Optional[str], label: Optional[str], notes: bool) -> str:
    spec = "".join("l" if k in _LEFT else "r" for k in kinds)
    row = lambda cells: "    " + " & ".join(_tex_cell(c, k) for c, k in zip(cells, kinds)) + r" \\"  # noqa: E731
    lines = [r"\begin{table}[htbp]", r"  \centering"]
    if caption is not None:
        lines.append(r"  \caption{" + caption + "}")
    if label is not None:
        lines.append(r"  \label{" + label + "}")
    lines += [r"  \begin{tabular}{" + spec + "}", r"    \toprule",
              "    " + " & ".join(_tex_escape(t) for t in titles) + r" \\", r"    \midrule"]
    lines += [row(b) for b in body]
    if tail:
        lines.append(r"    \midrule")
        lines += [row(t) for t in tail]
    lines += [r"    \bottomrule", r"  \end{tabular}"]
    if notes and footer:
        lines.append(r"  \par\smallskip{\footnotesize " + " ".join(_tex_escape(f) for f in footer) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _check_latex_args(caption: Any, label: Any) -> None:
    for name, value in (("caption", caption), ("label", label)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"to_latex: {name} must be a string or None, got {type(value).__name__}")


def _sum(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) if vals else None


class SynOpsTable:
    """Per-layer synops, neuron and energy statistics: plain data that prints as a table.

    Iterate over it for the layer rows (``table.rows``), index it by layer name
    or position, read the total from ``table.total``. ``str(table)`` is
    :meth:`render` with the ``"compact"`` columns; :meth:`to_markdown`,
    :meth:`to_latex`, :meth:`to_csv`, :meth:`to_dataframe` (pandas) and
    :meth:`plot` (matplotlib) export it; :meth:`blocks` pairs each synaptic
    layer with its neuron layer; :func:`compare` sets two tables side by side.

    Attributes
    ----------
    rows : list of LayerRow
        In forward order.
    total : LayerRow
        Sums over the rows (rates are weighted means over the neuron layers).
    samples : int
        Samples the numbers are averaged over.
    dt : float or None
        Seconds per time step, if given.
    energy_model : str or None
        Name of the energy model.
    per_neuron : dict
        Firing rate of every neuron of each neuron layer (``{name: Tensor}``).
    notes : list of str
        Lines printed under the table.
    view : str
        ``"layers"`` (one row per layer) or ``"blocks"`` (see :meth:`blocks`).

    Examples
    --------
    >>> import torch, synopsloss as sl
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU())
    >>> counter = sl.SynOpsCounter(net)
    >>> _ = net(torch.tensor([[1.0, 1.0]]))
    >>> table = counter.table(energy=None)
    >>> table.total.synops, table.names
    (4.0, ['0', '1'])
    >>> print(table.to_markdown(columns=["type", "synops"]))
    | Layer | Type | Synops |
    |---|---|---:|
    | 0 \\* | Linear | 4 |
    | 1 | ReLU | - |
    | Total |  | 4 |
    <BLANKLINE>
    Per sample, averaged over 1 sample(s).
    \\* fed directly by the data: its synops are set by the input, not by training.
    <BLANKLINE>
    """

    def __init__(
        self,
        rows: Sequence[LayerRow],
        total: LayerRow,
        *,
        samples: int,
        dt: Optional[float] = None,
        energy_model: Optional[str] = None,
        per_neuron: Optional[Dict[str, Tensor]] = None,
        notes: Sequence[str] = (),
        view: str = "layers",
        pricer: Any = None,
    ) -> None:
        if view not in ("layers", "blocks"):
            raise ValueError(f"view must be 'layers' or 'blocks', got {view!r}")
        self.rows = list(rows)
        self.total = total
        self.samples = samples
        self.dt = dt
        self.energy_model = energy_model
        #: the EnergyModel that priced the rows (``energy_model`` is its name; a model of yours need not be a preset)
        self.pricer = pricer
        self.per_neuron = dict(per_neuron or {})
        self.notes = list(notes)
        self.view = view

    # ------------------------------------------------------------------ data access

    def __iter__(self) -> Iterator[LayerRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Union[int, str]) -> LayerRow:
        if isinstance(key, int):
            return self.rows[key]
        for row in self.rows:
            if row.name == key:
                return row
        if key == "total":
            return self.total
        raise KeyError(f"no layer {key!r} in the table; layers: {[r.name for r in self.rows]}")

    @property
    def names(self) -> List[str]:
        """The row names, in forward order."""
        return [r.name for r in self.rows]

    def to_dicts(self, total: bool = True) -> List[Dict[str, Any]]:
        """The rows (and the total) as plain dicts of every column."""
        rows = self.rows + ([self.total] if total else [])
        return [asdict(r) for r in rows]

    # ------------------------------------------------------------------ views

    def blocks(self) -> "SynOpsTable":
        """The block view: each synaptic layer and the neuron or activation layer it feeds, on one row.

        Pairing rule (forward order): after each ``synaptic`` row, the first
        ``neuron`` or ``activation`` row before the next ``synaptic`` row,
        skipping rows that hold no counts (dropout, reshape, norm, pooling,
        upsampling, ...); each neuron row is taken at most once. A neuron's
        recurrent synapses (``recurrent synapses`` rows named ``<neuron>.*``)
        join its block. Unpaired synaptic and neuron rows are blocks of their
        own; rows that hold no counts are left out.

        Returns
        -------
        SynOpsTable
            With :class:`BlockRow` rows (named ``"<synaptic> + <neuron>"``),
            ``view="blocks"`` and the same total.

        Examples
        --------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Dropout(0.0), torch.nn.ReLU(),
        ...                           torch.nn.Linear(3, 1))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.ones(4, 2))
        >>> [(b.name, b.type) for b in counter.table().blocks()]
        [('0 + 2', 'Linear + ReLU'), ('3', 'Linear')]
        """
        if self.view == "blocks":
            return self
        rows = self.rows
        taken = set()
        groups: List[Tuple[int, Optional[LayerRow], Optional[LayerRow]]] = []  # (position, synaptic, neuron)
        for i, row in enumerate(rows):
            if row.kind != "synaptic":
                continue
            partner = None
            for j in range(i + 1, len(rows)):
                kind = rows[j].kind
                if kind == "synaptic":
                    break
                if kind in ("neuron", "activation") and j not in taken:
                    partner = j
                    break
            if partner is not None:
                taken.add(partner)
            groups.append((i, row, rows[partner] if partner is not None else None))
        for j, row in enumerate(rows):
            if row.kind in ("neuron", "activation") and j not in taken:
                groups.append((j, None, row))
        neuron_names = {g[2].name for g in groups if g[2] is not None}
        recurrent: Dict[str, List[LayerRow]] = {}
        for j, row in enumerate(rows):
            if row.kind == "recurrent synapses":
                owner = next((n for n in neuron_names if row.name.startswith(n + ".")), None)
                if owner is not None:
                    recurrent.setdefault(owner, []).append(row)
                else:
                    groups.append((j, row, None))
        groups.sort(key=lambda g: g[0])
        blocks = [_block(syn, neu, recurrent.get(neu.name, []) if neu is not None else []) for _, syn, neu in groups]
        notes = ["Blocks: each synaptic layer with the first neuron or activation layer after it in forward order "
                 "(dropout, reshape, norm and pooling layers skipped); synops from the synaptic layer, rates and "
                 "neuron ops from the neuron."]
        merged = [f"{b.neuron} ({', '.join(b.recurrent)})" for b in blocks if b.recurrent]
        if merged:
            notes.append("Recurrent synapses counted in their neuron's block: " + "; ".join(merged) + ".")
        return SynOpsTable(blocks, self.total, samples=self.samples, dt=self.dt, energy_model=self.energy_model,
                           per_neuron=self.per_neuron, notes=notes + self.notes, view="blocks", pricer=self.pricer)

    # ------------------------------------------------------------------ rendering

    def _keys(self, columns: Union[None, str, Sequence[str]]) -> List[str]:
        if columns is None:
            columns = "blocks" if self.view == "blocks" else "compact"
        if isinstance(columns, str):
            if columns not in PRESETS:
                hint = f" (a single column: columns=[{columns!r}])" if columns in COLUMNS else ""
                raise ValueError(f"unknown column preset {columns!r}{hint}; presets: {', '.join(PRESETS)}; "
                                 f"or pass a list of columns from: {', '.join(COLUMNS)}")
            keys = [k for k in PRESETS[columns]
                    if k in ("name", "type", "kind") or any(getattr(r, k) is not None for r in self.rows)]
            return keys
        if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns):
            raise TypeError(f"columns must be a preset name or a list of column names, got {columns!r}")
        unknown = [c for c in columns if c not in COLUMNS]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; valid columns: {', '.join(COLUMNS)}; "
                             f"presets: {', '.join(PRESETS)}")
        return list(dict.fromkeys(["name", *columns]))

    def _parts(self, columns: Union[None, str, Sequence[str]]):
        keys = self._keys(columns)
        titles = ["Block" if k == "name" and self.view == "blocks" else COLUMNS[k][0] for k in keys]
        kinds = [COLUMNS[k][1] for k in keys]

        def cells(row: LayerRow) -> List[str]:
            out = []
            for k, kind in zip(keys, kinds):
                s = _fmt(getattr(row, k), kind)
                if k == "name" and row.data_fed:
                    s += " *"
                out.append(s)
            return out

        footer = self._footer(energy="energy" in keys)
        return titles, kinds, [cells(r) for r in self.rows], [cells(self.total)], footer

    def _footer(self, energy: bool = True) -> List[str]:
        head = f"Per sample, averaged over {self.samples} sample(s)"
        if self.dt is not None:
            head += f"; dt = {self.dt:g} s per time step"
        if energy and self.energy_model is not None:
            head += f"; energy: {self.energy_model} model"
        lines = [head + "."]
        if any(r.data_fed for r in self.rows):
            lines.append("* fed directly by the data: its synops are set by the input, not by training.")
        lines.extend(self.notes)
        return lines

    def _view(self, view: str) -> "SynOpsTable":
        if view == "layers":
            if self.view == "blocks":
                raise ValueError("this is a block view; render the layer table it came from for view='layers'")
            return self
        if view == "blocks":
            return self.blocks()
        raise ValueError(f"view must be 'layers' or 'blocks', got {view!r}")

    def render(self, columns: Union[None, str, Sequence[str]] = None, *, view: Optional[str] = None) -> str:
        """The table as fixed-width text.

        Parameters
        ----------
        columns
            A preset name (see :data:`PRESETS`; default ``"compact"``, or
            ``"blocks"`` for the block view) or a list of column keys (see
            :data:`COLUMNS`; the layer name always comes first).
        view
            ``"layers"`` (default) or ``"blocks"`` (:meth:`blocks`).

        Raises
        ------
        ValueError
            For an unknown preset, column or view (the message lists the valid ones).

        Examples
        --------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.tensor([[1.0, 0.0]]))
        >>> print(counter.table().render(["dense", "eff_acs"]).splitlines()[2])
        0 *        2        1
        """
        table = self._view(view or self.view)
        return _render_text(*table._parts(columns))

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"SynOpsTable({len(self.rows)} {self.view}, synops={_fmt(self.total.synops, 'si')} per sample)"

    def to_markdown(self, columns: Union[None, str, Sequence[str]] = None, *, view: Optional[str] = None) -> str:
        """A GitHub-flavoured Markdown table (``columns`` and ``view`` as in :meth:`render`).

        Examples
        --------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.tensor([[1.0, 0.0]]))
        >>> print("\\n".join(counter.table().to_markdown(["synops"]).splitlines()[:4]))
        | Layer | Synops |
        |---|---:|
        | 0 \\* | 1 |
        | Total | 1 |
        """
        table = self._view(view or self.view)
        return _render_markdown(*table._parts(columns))

    def to_latex(self, columns: Union[None, str, Sequence[str]] = None, *, caption: Optional[str] = None,
                 label: Optional[str] = None, view: Optional[str] = None, notes: bool = True) -> str:
        """A LaTeX ``table`` with a booktabs ``tabular`` (``\\usepackage{booktabs}``); no pandas needed.

        Parameters
        ----------
        columns, view
            As in :meth:`render`.
        caption, label
            ``\\caption`` (inserted as is: it may hold LaTeX) and ``\\label``.
        notes
            Add the footer lines (samples, data-fed marks) in small type under the tabular.

        Examples
        --------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.tensor([[1.0, 0.0]]))
        >>> print(counter.table().to_latex(["synops"], label="tab:synops", notes=False))
        \\begin{table}[htbp]
          \\centering
          \\label{tab:synops}
          \\begin{tabular}{lr}
            \\toprule
            Layer & Synops \\\\
            \\midrule
            0 * & 1 \\\\
            \\midrule
            Total & 1 \\\\
            \\bottomrule
          \\end{tabular}
        \\end{table}
        <BLANKLINE>
        """
        _check_latex_args(caption, label)
        table = self._view(view or self.view)
        return _render_latex(*table._parts(columns), caption=caption, label=label, notes=notes)

    _CSV_SKIP = ("energy_parts",)

    def to_csv(self, path: Optional[str] = None) -> str:
        """Every column at full precision as CSV (one line per layer and the total); written to ``path`` if given.

        Examples
        --------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.tensor([[1.0, 0.0]]))
        >>> counter.table().to_csv().splitlines()[1].split(",")[:5]
        ['0', 'Linear', 'synaptic', 'True', '2']
        """
        names = [f.name for f in fields(type(self.rows[0]) if self.rows else LayerRow) if f.name not in self._CSV_SKIP]
        parts = sorted({k for r in self.rows for k in r.energy_parts})
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names + [f"energy_{p}" for p in parts])
        for r in self.rows + [self.total]:
            vals = []
            for n in names:
                v = getattr(r, n, None)
                if isinstance(v, tuple):
                    v = ";".join(v) if all(isinstance(i, str) for i in v) else "x".join(str(i) for i in v)
                vals.append("" if v is None else v)
            w.writerow(vals + [r.energy_parts.get(p, "") for p in parts])
        text = buf.getvalue()
        if path is not None:
            with open(path, "w", newline="") as fh:
                fh.write(text)
        return text

    def to_dataframe(self):
        """A pandas DataFrame indexed by layer name (the total last). Requires pandas."""
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("SynOpsTable.to_dataframe needs pandas: pip install pandas") from err
        records = self.to_dicts(total=True)
        for rec in records:
            for k, v in rec.pop("energy_parts").items():
                rec[f"energy_{k}"] = v
        return pd.DataFrame.from_records(records).set_index("name")

    def plot(self, path: Optional[str] = None, *, figsize: Optional[Tuple[float, float]] = None,
             log: bool = False):
        """Horizontal bar charts of synops per layer and firing rate per neuron layer (matplotlib).

        Bars are labelled ``"name (Type)"`` in forward order, top to bottom;
        layers fed by the data are grey and marked ``*``; each synops bar
        carries its share of the total.

        Parameters
        ----------
        path
            Save the figure there (PNG, PDF, SVG, ... by extension).
        figsize
            Figure size in inches; default: 8 wide and tall enough for one
            bar per layer.
        log
            Logarithmic synops axis (for layers of very different sizes).

        Returns
        -------
        matplotlib.figure.Figure
            ``fig.axes[0]`` holds the synops bars, ``fig.axes[1]`` the firing rates.

        Examples
        --------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.tensor([[1.0, 0.0]]))
        >>> fig = counter.table().plot(log=True)
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['0 (Linear) *']
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as err:  # pragma: no cover
            raise ImportError("SynOpsTable.plot needs matplotlib: pip install matplotlib") from err
        if not isinstance(log, bool):
            raise TypeError(f"log must be True or False, got {log!r}")
        syn = [r for r in self.rows if r.synops is not None]
        neu = [r for r in self.rows if r.firing_rate is not None]
        if figsize is None:
            figsize = (8.0, 2.2 + 0.32 * (len(syn) + max(len(neu), 1)))
        fig = Figure(figsize=figsize, layout="constrained")
        # one subfigure per chart: its title is centred on the whole width, so long layer names cannot push it out
        sf1, sf2 = fig.subfigures(2, 1, height_ratios=[max(len(syn), 1) + 2, max(len(neu), 1) + 2])
        ax1, ax2 = sf1.subplots(), sf2.subplots()
        label = lambda r: f"{r.name} ({r.type})" + (" *" if r.data_fed else "")  # noqa: E731
        widths = [r.synops for r in syn]
        bars = ax1.barh(range(len(syn)), widths, color=["#b0b0b0" if r.data_fed else "#1f77b4" for r in syn])
        ax1.set_yticks(range(len(syn)), [label(r) for r in syn])
        ax1.invert_yaxis()
        title = f"Synops per sample and layer{' (log scale)' if log else ''}; total {_fmt(self.total.synops, 'si')}"
        if any(r.data_fed for r in syn):
            title += "\n* grey: fed by the data, set by the input"
        sf1.suptitle(title, fontsize=11)
        top = max([w for w in widths if w > 0], default=1.0)
        if log:
            low = min([w for w in widths if w > 0], default=1.0)
            ax1.set_xscale("log")
            ax1.set_xlim(low / 3, top * 10)  # room for the percentages after the bars
        else:
            ax1.set_xlim(0, top * 1.2)
        for b, r in zip(bars, syn):
            if r.share is not None and b.get_width() > 0:
                ax1.annotate(f"{100 * r.share:.0f}%" if r.share >= 0.01 else "<1%",
                             (b.get_width(), b.get_y() + b.get_height() / 2),
                             xytext=(3, 0), textcoords="offset points", ha="left", va="center", fontsize=8)
        ax2.barh(range(len(neu)), [r.firing_rate for r in neu], color="#d62728")
        ax2.set_yticks(range(len(neu)), [label(r) for r in neu])
        ax2.invert_yaxis()
        sf2.suptitle("Firing rate per neuron layer (spikes per neuron per time step)" if neu
                     else "Firing rate per neuron layer (no neuron layers)", fontsize=11)
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def _block(syn: Optional[LayerRow], neu: Optional[LayerRow], rec: List[LayerRow]) -> BlockRow:
    parts = [r for r in (syn, *rec, neu) if r is not None]
    synaptic = [r for r in (syn, *rec) if r is not None]
    first = syn if syn is not None else neu
    if first is None:  # pragma: no cover - blocks() always passes one of them
        raise ValueError("a block needs a synaptic or a neuron row")
    row = BlockRow(
        name=" + ".join(r.name for r in (syn, neu) if r is not None),
        type=" + ".join(r.type for r in (syn, neu) if r is not None),
        kind="block", data_fed=bool(syn is not None and syn.data_fed),
        in_shape=first.in_shape, out_shape=(neu or first).out_shape,
        neurons=(neu.neurons if neu is not None else syn.neurons if syn is not None else None),
        in_neurons=syn.in_neurons if syn is not None else None,
        weights=_sum([r.weights for r in synaptic]), biases=_sum([r.biases for r in synaptic]),
        fanout_mean=syn.fanout_mean if syn is not None else None,
        fanout_max=syn.fanout_max if syn is not None else None,
        in_rate=syn.in_rate if syn is not None else None,
        input_events=syn.input_events if syn is not None else None,
        time_steps=first.time_steps,
        synaptic=syn.name if syn is not None else None,
        neuron=neu.name if neu is not None else None,
        recurrent=tuple(r.name for r in rec),
    )
    for k in ("synops", "synops_per_step", "synops_per_s", "dense", "eff_macs", "eff_acs", "synops_estimate",
              "energy_paper", "ann_energy"):
        setattr(row, k, _sum([getattr(r, k) for r in synaptic]))
    if row.synops_estimate is not None and row.synops:
        row.estimate_error = (row.synops_estimate - row.synops) / row.synops
    if syn is not None:  # (the block's input: its synaptic layer's)
        row.nonzero_rate, row.output_values = syn.nonzero_rate, syn.output_values
        row.break_even_rate = syn.break_even_rate if not rec else None
        if not rec:  # (quantiles of one layer's per-sample synops; those of two layers do not add)
            for k in ("synops_p50", "synops_p95", "synops_p99", "synops_max"):
                setattr(row, k, getattr(syn, k))
    if neu is not None:
        for k in ("neuron_ops", "neuron_ops_dense", "membrane_updates", "membrane_updates_dense", "spikes",
                  "firing_rate", "density", "leaky"):
            setattr(row, k, getattr(neu, k))
    row.share = _sum([r.share for r in synaptic])
    row.energy = _sum([r.energy for r in parts])
    for r in parts:
        for k, v in r.energy_parts.items():
            row.energy_parts[k] = row.energy_parts.get(k, 0.0) + v
    return row


# ---------------------------------------------------------------------- comparison


@dataclass
class ComparisonRow:
    """One row of a :class:`SynOpsComparison` (``None``: not in that table / does not apply).

    ``ratio`` is ``synops_before / synops_after`` (above 1: fewer synops after).
    """

    name: str
    type: str
    data_fed: bool = False
    synops_before: Optional[float] = None
    synops_after: Optional[float] = None
    ratio: Optional[float] = None
    rate_before: Optional[float] = None
    rate_after: Optional[float] = None
    energy_before: Optional[float] = None
    energy_after: Optional[float] = None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None:
        return None
    if b == 0:
        return math.inf if a > 0 else None
    return a / b


class SynOpsComparison:
    """Two :class:`SynOpsTable` side by side (made by :func:`compare`).

    Attributes
    ----------
    rows : list of ComparisonRow
        Per layer (or block), in the first table's order, then layers only the second table has.
    total : ComparisonRow
        The totals of both tables.
    driven : ComparisonRow or None
        The network-driven synops (every layer not fed by the data), when some layer is fed by the data.
    labels : tuple of str
        Names of the two tables in the column titles.
    view : str
        ``"layers"`` or ``"blocks"``.
    """

    _KEYS = ("name", "type", "synops_before", "synops_after", "ratio", "rate_before", "rate_after",
             "energy_before", "energy_after")

    def __init__(self, rows: Sequence[ComparisonRow], total: ComparisonRow, driven: Optional[ComparisonRow],
                 labels: Tuple[str, str], samples: Tuple[int, int], energy_model: Optional[str],
                 view: str = "layers") -> None:
        self.view = view
        self.rows = list(rows)
        self.total = total
        self.driven = driven
        self.labels = labels
        self.samples = samples
        self.energy_model = energy_model

    def __iter__(self) -> Iterator[ComparisonRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Union[int, str]) -> ComparisonRow:
        if isinstance(key, int):
            return self.rows[key]
        for row in self.rows + [self.total] + ([self.driven] if self.driven is not None else []):
            if row.name == key:
                return row
        raise KeyError(f"no row {key!r} in the comparison; rows: {[r.name for r in self.rows]}")

    def to_dicts(self) -> List[Dict[str, Any]]:
        """The rows, the total and the network-driven row as plain dicts."""
        tail = [self.total] + ([self.driven] if self.driven is not None else [])
        return [asdict(r) for r in self.rows + tail]

    def _parts(self):
        a, b = self.labels
        spec = {"name": ("Block" if self.view == "blocks" else "Layer", "name"), "type": ("Type", "str"), "synops_before": (f"Synops {a}", "si"),
                "synops_after": (f"Synops {b}", "si"), "ratio": (f"{a}/{b}", "ratio"),
                "rate_before": (f"Rate {a}", "rate"), "rate_after": (f"Rate {b}", "rate"),
                "energy_before": (f"Energy {a}", "joule"), "energy_after": (f"Energy {b}", "joule")}
        tail = [self.total] + ([self.driven] if self.driven is not None else [])
        keys = [k for k in self._KEYS if k in ("name", "type") or any(getattr(r, k) is not None for r in self.rows + tail)]

        def cells(row: ComparisonRow) -> List[str]:
            out = [_fmt(getattr(row, k), spec[k][1]) for k in keys]
            if row.data_fed:
                out[0] += " *"
            return out

        footer = [f"Per sample ({a}: {self.samples[0]}, {b}: {self.samples[1]} sample(s)); "
                  f"{a}/{b}: synops {a} divided by synops {b} (above 1: fewer synops {b})"
                  + ("; rate: output spikes per neuron per time step" if "rate_before" in keys else "")
                  + (f"; energy: {self.energy_model} model" if "energy_before" in keys and self.energy_model else "")
                  + "."]
        if any(r.data_fed for r in self.rows):
            footer.append("* fed directly by the data: its synops are set by the input, not by training; "
                          "network-driven: every other layer.")
        return ([spec[k][0] for k in keys], [spec[k][1] for k in keys], [cells(r) for r in self.rows],
                [cells(r) for r in tail], footer)

    def render(self) -> str:
        """The comparison as fixed-width text (also ``str(comparison)``)."""
        return _render_text(*self._parts())

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return (f"SynOpsComparison({len(self.rows)} rows, synops {_fmt(self.total.synops_before, 'si')} -> "
                f"{_fmt(self.total.synops_after, 'si')})")

    def to_markdown(self) -> str:
        """The comparison as a GitHub-flavoured Markdown table."""
        return _render_markdown(*self._parts())

    def to_latex(self, *, caption: Optional[str] = None, label: Optional[str] = None, notes: bool = True) -> str:
        """The comparison as a LaTeX booktabs table (arguments as :meth:`SynOpsTable.to_latex`)."""
        _check_latex_args(caption, label)
        return _render_latex(*self._parts(), caption=caption, label=label, notes=notes)


def compare(before: SynOpsTable, after: SynOpsTable, *, labels: Tuple[str, str] = ("before", "after"),
            view: str = "layers") -> SynOpsComparison:
    """Two tables side by side: synops per layer and their ratio, firing rates, energy, totals.

    Layers are matched by name. With ``view="layers"`` the rows are the layers
    that carry synops or a firing rate in either table; with ``view="blocks"``
    the blocks of :meth:`SynOpsTable.blocks`. The ratio is ``before / after``
    (above 1: fewer synops after). When a layer is fed by the data, a
    "Network-driven" row sums the synops of all other layers (what a synops
    loss can change).

    Parameters
    ----------
    before, after
        Tables of the same network (e.g. before and after training), from
        :meth:`SynOpsCounter.table`.
    labels
        Names of the two tables in the column titles.
    view
        ``"layers"`` or ``"blocks"``.

    Returns
    -------
    SynOpsComparison
        Prints as text; ``to_markdown()``, ``to_latex()``, ``to_dicts()``.

    Raises
    ------
    TypeError
        If ``before`` or ``after`` is not a :class:`SynOpsTable`.
    ValueError
        For an unknown ``view`` or ``labels`` that are not two strings.

    Examples
    --------
    >>> import torch, synopsloss as sl
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0), net[2].weight.fill_(1.0)
    >>> counter = sl.SynOpsCounter(net)
    >>> _ = net(torch.tensor([[1.0, 1.0]]))
    >>> before = counter.table(energy=None)
    >>> with torch.no_grad():
    ...     net[2].weight[0, 0] = 0.0  # prune one synapse
    >>> counter.reset()
    >>> _ = net(torch.tensor([[1.0, 1.0]]))
    >>> comparison = sl.compare(before, counter.table(energy=None))
    >>> comparison["2"].ratio
    2.0
    >>> print(comparison.render().splitlines()[0])
    Layer           Type    Synops before  Synops after  before/after
    """
    for name, t in (("before", before), ("after", after)):
        if not isinstance(t, SynOpsTable):
            raise TypeError(f"compare: {name} must be a SynOpsTable (counter.table()), got {type(t).__name__}")
    if view not in ("layers", "blocks"):
        raise ValueError(f"compare: view must be 'layers' or 'blocks', got {view!r}")
    if (not isinstance(labels, (tuple, list)) or len(labels) != 2
            or not all(isinstance(s, str) and s for s in labels)):
        raise ValueError(f"compare: labels must be two non-empty strings, got {labels!r}")
    if view == "blocks":
        before, after = before.blocks(), after.blocks()
    keep = lambda r: r.synops is not None or r.firing_rate is not None  # noqa: E731
    # (matched by name and kind: a norse recurrent cell has a synapse row and a neuron row of one name)
    a = {(r.name, r.kind): r for r in before if keep(r)}
    b = {(r.name, r.kind): r for r in after if keep(r)}
    names = list(dict.fromkeys([*a, *b]))
    types_a, types_b = {r.name: r.type for r in before}, {r.name: r.type for r in after}
    other = [f"{n} ({types_a[n]} / {types_b[n]})" for n in types_a if n in types_b and types_a[n] != types_b[n]]
    if other:
        import warnings

        from .errors import SynOpsWarning

        warnings.warn(f"compare: layer(s) {', '.join(other)} are different layers in the two tables, matched by "
                      "name: their ratios compare different things. Compare two tables of the same network.",
                      SynOpsWarning, stacklevel=2)
    rows = []
    for key in names:
        ra, rb = a.get(key), b.get(key)
        rows.append(ComparisonRow(
            name=key[0], type=(ra if ra is not None else rb).type,
            data_fed=bool((ra is not None and ra.data_fed) or (rb is not None and rb.data_fed)),
            synops_before=ra.synops if ra else None, synops_after=rb.synops if rb else None,
            ratio=_ratio(ra.synops if ra else None, rb.synops if rb else None),
            rate_before=ra.firing_rate if ra else None, rate_after=rb.firing_rate if rb else None,
            energy_before=ra.energy if ra else None, energy_after=rb.energy if rb else None))
    ta, tb = before.total, after.total
    total = ComparisonRow(name="Total", type="", synops_before=ta.synops, synops_after=tb.synops,
                          ratio=_ratio(ta.synops, tb.synops), rate_before=ta.firing_rate, rate_after=tb.firing_rate,
                          energy_before=ta.energy, energy_after=tb.energy)
    driven = None
    if any(r.data_fed for r in rows):
        da = _sum([r.synops_before for r in rows if not r.data_fed])
        db = _sum([r.synops_after for r in rows if not r.data_fed])
        driven = ComparisonRow(name="Network-driven", type="", synops_before=da, synops_after=db, ratio=_ratio(da, db))
    model = before.energy_model
    if after.energy_model != before.energy_model:
        model = f"{before.energy_model} ({labels[0]}) and {after.energy_model} ({labels[1]})"
    return SynOpsComparison(rows, total, driven, (labels[0], labels[1]), (before.samples, after.samples), model,
                            view=view)

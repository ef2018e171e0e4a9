"""The per-layer statistics table: :class:`LayerRow` records and :class:`SynOpsTable` (rendering, export).

Built by :meth:`SynOpsCounter.table` (see :mod:`synopsloss.report`).

One row per layer that ran, in forward order, plus a total row. Synaptic
layers carry the counter's numbers; neuron layers (snntorch / sinabs) their
firing rates, membrane updates and neuron operations; layers without synapses
(BatchNorm -- folded into the preceding weights on hardware --, dropout,
pooling, upsampling, flatten, activations) appear as what they are. Every
number is *per sample* over all time steps unless its name says otherwise.

Columns (attributes of :class:`LayerRow`):

==========================  ===================================================================
``name`` / ``type``         qualified module name / class; ``kind``: ``synaptic``,
                            ``recurrent synapses``, ``neuron``, ``activation``, ``norm (folded)``,
                            ``dropout``, ``pooling``, ``upsampling``, ``reshape``, ...
``data_fed``                the layer reads the model's input directly: its synops are set by the
                            data, not by training (marked ``*`` in the text table)
``in_shape``, ``out_shape`` one sample's input / output shape (synaptic layers: the rule's sample
                            dims; other layers: the call's shape without dim 0)
``neurons``                 output neurons (synaptic: one sample of the output; neuron layers: neurons)
``fanout_mean/max``         effective fan-out over the input neurons (nonzero weight taps)
``in_rate``                 input events per input neuron per time step (input sum / rows / neurons)
``time_steps``              time steps the layer ran (``SynOpsCounter.time_steps``; tokens are not steps)
``synops``                  input value x effective fan-out; ``synops_per_step`` = ``synops / time_steps``;
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

Example
-------
>>> import torch, synopsloss as sl
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.ReLU())
>>> counter = sl.SynOpsCounter(net)
>>> _ = net(torch.tensor([[1.0, 0.0, 1.0, 0.0]]))
>>> table = counter.table()
>>> [(r.name, r.kind) for r in table], table["0"].synops
([('0', 'synaptic'), ('1', 'activation')], 6.0)
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from torch import Tensor

__all__ = ["LayerRow", "SynOpsTable"]


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
    fanout_mean: Optional[float] = None
    fanout_max: Optional[float] = None
    in_rate: Optional[float] = None
    input_events: Optional[float] = None
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


# (title, attribute, format) of the rendered columns
_COLUMNS: List[Tuple[str, str, str]] = [
    ("Layer", "name", "name"),
    ("Type", "type", "str"),
    ("Kind", "kind", "str"),
    ("In shape", "in_shape", "shape"),
    ("Neurons", "neurons", "int"),
    ("Fan-out mean", "fanout_mean", "num"),
    ("Fan-out max", "fanout_max", "num"),
    ("In rate", "in_rate", "rate"),
    ("T", "time_steps", "num"),
    ("Synops", "synops", "si"),
    ("Synops/step", "synops_per_step", "si"),
    ("Synops/s", "synops_per_s", "si"),
    ("Est. fr*T*FLOPs", "synops_estimate", "si"),
    ("Dense", "dense", "si"),
    ("Eff MACs", "eff_macs", "si"),
    ("Eff ACs", "eff_acs", "si"),
    ("Neuron ops", "neuron_ops", "si"),
    ("Mem updates", "membrane_updates", "si"),
    ("Out rate", "firing_rate", "rate"),
    ("Share", "share", "pct"),
    ("Energy", "energy", "joule"),
]

_SI = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
_J = [(1.0, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ"), (1e-12, "pJ"), (1e-15, "fJ")]


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
    if kind == "joule":
        if v == 0:
            return "0 J"
        for scale, unit in _J:
            if abs(v) >= scale:
                return f"{v / scale:.3g} {unit}"
        return f"{v / 1e-15:.3g} fJ"
    if kind == "si":
        for scale, unit in _SI:
            if abs(v) >= scale:
                return f"{v / scale:.3g}{unit}"
        return f"{v:.3g}" if v != int(v) else str(int(v))
    return f"{v:.3g}" if v != int(v) else str(int(v))


class SynOpsTable:
    """Per-layer synops, neuron and energy statistics: plain data that prints as a table.

    Iterate over it for the layer rows (``table.rows``), index it by layer name
    or position, read the total from ``table.total``. ``str(table)`` is a
    fixed-width text table; :meth:`to_markdown`, :meth:`to_csv`,
    :meth:`to_dataframe` (pandas) and :meth:`plot` (matplotlib) export it.

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
    ) -> None:
        self.rows = list(rows)
        self.total = total
        self.samples = samples
        self.dt = dt
        self.energy_model = energy_model
        self.per_neuron = dict(per_neuron or {})
        self.notes = list(notes)

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
        return [r.name for r in self.rows]

    def to_dicts(self, total: bool = True) -> List[Dict[str, Any]]:
        """The rows (and the total) as plain dicts of every column."""
        rows = self.rows + ([self.total] if total else [])
        return [asdict(r) for r in rows]

    # ------------------------------------------------------------------ rendering

    def _columns(self) -> List[Tuple[str, str, str]]:
        cols = []
        for title, attr, kind in _COLUMNS:
            if attr == "synops_per_s" and self.dt is None:
                continue
            if attr == "energy" and self.energy_model is None:
                continue
            if attr not in ("name", "type", "kind") and all(getattr(r, attr) is None for r in self.rows):
                continue
            if attr == "energy":
                title = f"Energy ({self.energy_model})"
            cols.append((title, attr, kind))
        return cols

    def _cells(self, row: LayerRow, cols) -> List[str]:
        out = []
        for _title, attr, kind in cols:
            v = getattr(row, attr)
            s = _fmt(v, kind)
            if attr == "name" and row.data_fed:
                s += " *"
            out.append(s)
        return out

    def _footer(self) -> List[str]:
        lines = [f"Per sample, averaged over {self.samples} sample(s)"
                 + (f"; dt = {self.dt:g} s per time step" if self.dt is not None else "") + "."]
        if any(r.data_fed for r in self.rows):
            lines.append("* fed directly by the data: its synops are set by the input, not by training.")
        lines.extend(self.notes)
        return lines

    def __str__(self) -> str:
        cols = self._columns()
        body = [self._cells(r, cols) for r in self.rows]
        total = self._cells(self.total, cols)
        header = [c[0] for c in cols]
        widths = [max(len(x) for x in col) for col in zip(header, *body, total)]

        def line(cells: List[str]) -> str:
            parts = []
            for i, (c, w) in enumerate(zip(cells, widths)):
                parts.append(c.ljust(w) if cols[i][2] in ("name", "str", "shape") else c.rjust(w))
            return "  ".join(parts).rstrip()

        rule = "-" * len(line(header))
        out = [line(header), rule] + [line(b) for b in body] + ["=" * len(rule), line(total)]
        return "\n".join(out + self._footer())

    def __repr__(self) -> str:
        return f"SynOpsTable({len(self.rows)} layers, synops={_fmt(self.total.synops, 'si')} per sample)"

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table (same columns as the text table)."""
        cols = self._columns()
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(c[0] for c in cols) + " |",
                 "|" + "|".join("---" if c[2] in ("name", "str", "shape") else "---:" for c in cols) + "|"]
        for r in self.rows + [self.total]:
            lines.append("| " + " | ".join(esc(c) for c in self._cells(r, cols)) + " |")
        return "\n".join(lines + [""] + self._footer()) + "\n"

    _CSV_SKIP = ("energy_parts",)

    def to_csv(self, path: Optional[str] = None) -> str:
        """Every column at full precision as CSV (one line per layer and the total); written to ``path`` if given."""
        names = [f.name for f in fields(LayerRow) if f.name not in self._CSV_SKIP]
        parts = sorted({k for r in self.rows for k in r.energy_parts})
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names + [f"energy_{p}" for p in parts])
        for r in self.rows + [self.total]:
            vals = []
            for n in names:
                v = getattr(r, n)
                if isinstance(v, tuple):
                    v = "x".join(str(i) for i in v)
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

    def plot(self, path: Optional[str] = None, *, figsize: Tuple[float, float] = (10.0, 6.0)):
        """Bar charts of synops per layer and firing rate per neuron layer (matplotlib).

        Returns the ``matplotlib.figure.Figure``; saves it to ``path`` (PNG,
        PDF, ... by extension) if given.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as err:  # pragma: no cover
            raise ImportError("SynOpsTable.plot needs matplotlib: pip install matplotlib") from err
        syn = [r for r in self.rows if r.synops is not None]
        neu = [r for r in self.rows if r.firing_rate is not None]
        fig = Figure(figsize=figsize, layout="constrained")
        ax1, ax2 = fig.subplots(2, 1)
        labels = [r.name + (" *" if r.data_fed else "") for r in syn]
        bars = ax1.bar(range(len(syn)), [r.synops for r in syn], color=["#b0b0b0" if r.data_fed else "#1f77b4" for r in syn])
        ax1.set_xticks(range(len(syn)), labels, rotation=30, ha="right")
        ax1.set_ylabel("synops per sample")
        ax1.set_title(f"Synaptic operations per layer (total {_fmt(self.total.synops, 'si')}"
                      + (", grey: set by the input data" if any(r.data_fed for r in syn) else "") + ")")
        for b, r in zip(bars, syn):
            if r.share is not None:
                ax1.annotate(f"{100 * r.share:.0f}%", (b.get_x() + b.get_width() / 2, b.get_height()),
                             ha="center", va="bottom", fontsize=8)
        ax2.bar(range(len(neu)), [r.firing_rate for r in neu], color="#d62728")
        ax2.set_xticks(range(len(neu)), [r.name for r in neu], rotation=30, ha="right")
        ax2.set_ylabel("spikes / neuron / step")
        ax2.set_title("Firing rate per neuron layer" if neu else "Firing rate per neuron layer (no neuron layers)")
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig

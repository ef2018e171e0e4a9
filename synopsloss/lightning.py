"""A PyTorch Lightning callback that logs per-sample synops, correct under DDP.

``SynOpsMonitor`` counts, for each stage it watches (``train``, ``validate``,
``test``), the synops and NeuroBench counts of the LightningModule per sample,
accumulated over the epoch. Under DDP every rank counts its own shard; at the
end of the epoch the raw sums and sample counts are summed across ranks
(``trainer.strategy.reduce``) before dividing, so the logged numbers are the
per-sample averages over the whole data set, as on one process.

It keeps its own counters (one per stage, attached only while that stage runs),
so it can sit beside a :class:`~synopsloss.SynOpsLoss` that uses its own
counter without either counting twice.

Example
-------
>>> import lightning.pytorch as L  # doctest: +SKIP
>>> trainer = L.Trainer(callbacks=[SynOpsMonitor(logging_interval="epoch")])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Literal, Optional, Sequence

import torch
from torch import Tensor

from .counter import COUNT_KEYS, SynOpsCounter

try:  # the unified package first, the standalone one otherwise
    import lightning.pytorch as _pl
except ImportError:  # pragma: no cover - depends on the environment
    import pytorch_lightning as _pl  # type: ignore[no-redef]

__all__ = ["SynOpsMonitor"]

Stage = Literal["train", "validate", "test"]
_STAGES = ("train", "validate", "test")
_HOOK_PREFIX = {"train": "train", "validate": "validation", "test": "test"}


def _batch_size(batch: Any) -> int:
    """Samples in a batch: dim 0 of its first tensor (nested tuples, lists and dicts searched)."""
    if isinstance(batch, Tensor):
        if batch.dim() == 0:
            raise ValueError("SynOpsMonitor: the batch is a 0-dim tensor; pass batch_size_fn=")
        return int(batch.shape[0])
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        try:
            return _batch_size(item)
        except ValueError:
            continue
    raise ValueError(
        f"SynOpsMonitor cannot find a tensor in a batch of type {type(batch).__name__}; "
        "pass batch_size_fn=lambda batch: ... to SynOpsMonitor"
    )


class SynOpsMonitor(_pl.Callback):
    """Log per-sample synops of a LightningModule, summed correctly across DDP ranks.

    Parameters
    ----------
    logging_interval
        ``"epoch"``: one value per epoch, averaged over all samples of all
        ranks. ``"step"``: additionally the current batch's counts (this rank)
        after every training batch.
    stages
        Which loops to count.
    per_layer
        Also log each layer's synops.
    batch_size_fn
        Samples of a batch; by default dim 0 of the batch's first tensor.
    prefix
        Metric names are ``{prefix}/{stage}/{key}`` (``key`` in ``synops``,
        ``dense``, ``eff_macs``, ``eff_acs``) and
        ``{prefix}/{stage}/layer/{name}`` for ``per_layer``.
    counter_kwargs
        Passed to each :class:`~synopsloss.SynOpsCounter` (e.g. ``custom_rules``).

    Raises
    ------
    ValueError
        For an unknown ``logging_interval`` or stage.
    """

    def __init__(
        self,
        logging_interval: Literal["step", "epoch"] = "epoch",
        stages: Sequence[Stage] = ("train", "validate"),
        per_layer: bool = False,
        batch_size_fn: Optional[Callable[[Any], int]] = None,
        prefix: str = "synops",
        counter_kwargs: Optional[Dict[str, Any]] = None,
    ) -> None:
        if logging_interval not in ("step", "epoch"):
            raise ValueError(f"logging_interval must be 'step' or 'epoch', got {logging_interval!r}")
        bad = [s for s in stages if s not in _STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) {bad}; choose from {list(_STAGES)}")
        self.logging_interval = logging_interval
        self.stages = tuple(stages)
        self.per_layer = per_layer
        self.batch_size_fn = batch_size_fn or _batch_size
        self.prefix = prefix
        self.counter_kwargs = dict(counter_kwargs or {})
        self.counters: Dict[str, SynOpsCounter] = {}
        #: the last epoch's metrics per stage, as logged (also kept in ``state_dict``)
        self.last_metrics: Dict[str, Dict[str, float]] = {}

    @property
    def state_key(self) -> str:
        return f"SynOpsMonitor{{prefix={self.prefix!r}}}"

    # -------------------------------------------------------------- helpers

    def _counter(self, pl_module: Any, stage: str) -> SynOpsCounter:
        counter = self.counters.get(stage)
        if counter is None:
            kwargs = dict(self.counter_kwargs)
            kwargs.setdefault("batch_size", 1)  # replaced by each batch's size
            counter = self.counters[stage] = SynOpsCounter(pl_module, **kwargs)
            counter.remove()
        return counter

    def _only(self, stage: str) -> None:
        """Attach ``stage``'s counter and detach the others (validation runs inside training)."""
        for name, counter in self.counters.items():
            if name != stage and counter.attached:
                counter.remove()

    def _epoch_start(self, pl_module: Any, stage: str) -> None:
        if stage not in self.stages:
            return
        counter = self._counter(pl_module, stage)
        self._only(stage)
        counter.attach()
        counter.reset(accumulated=True)

    def _batch_start(self, pl_module: Any, stage: str, batch: Any) -> None:
        if stage not in self.stages:
            return
        counter = self._counter(pl_module, stage)
        self._only(stage)
        counter.attach()
        counter.reset()
        counter.batch_size = int(self.batch_size_fn(batch))

    def _metrics(self, stage: str, counts: Dict[str, Dict[str, float]]) -> Dict[str, float]:
        base = f"{self.prefix}/{stage}"
        metrics = {f"{base}/{k}": sum(row[k] for row in counts.values()) for k in COUNT_KEYS}
        if self.per_layer:
            metrics.update({f"{base}/layer/{name}": row["synops"] for name, row in counts.items()})
        return metrics

    def _log(self, trainer: Any, metrics: Dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        for key, value in metrics.items():
            trainer.callback_metrics[key] = torch.tensor(value)

    def _batch_end(self, trainer: Any, stage: str) -> None:
        if stage not in self.stages or self.logging_interval != "step" or stage != "train":
            return
        try:
            counts = self.counters[stage].snapshot().per_layer()
        except RuntimeError:  # nothing ran in this batch
            return
        self._log(trainer, {k + "_step": v for k, v in self._metrics(stage, counts).items()})

    def _epoch_end(self, trainer: Any, pl_module: Any, stage: str) -> None:
        counter = self.counters.get(stage)
        if stage not in self.stages or counter is None:
            return
        counter.reset()  # fold the last batch into the totals
        counter.remove()
        try:
            snap = counter.snapshot(accumulated=True)
        except RuntimeError:  # no batch of this stage ran
            return
        metrics = self._metrics(stage, snap.all_reduce().per_layer())
        self.last_metrics[stage] = metrics
        self._log(trainer, metrics)

    # -------------------------------------------------------------- hooks

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_start(pl_module, "train")

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._batch_start(pl_module, "train", batch)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._batch_end(trainer, "train")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_end(trainer, pl_module, "train")

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_start(pl_module, "validate")

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch_start(pl_module, "validate", batch)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_end(trainer, pl_module, "validate")

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_start(pl_module, "test")

    def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch_start(pl_module, "test", batch)

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_end(trainer, pl_module, "test")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        for counter in self.counters.values():
            counter.remove()

    def state_dict(self) -> Dict[str, Any]:
        return {"logging_interval": self.logging_interval, "stages": list(self.stages), "last_metrics": self.last_metrics}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.last_metrics = {k: dict(v) for k, v in state_dict.get("last_metrics", {}).items()}

"""``VistaTrainer``: a ``transformers.Trainer`` whose loss is cross-entropy plus the VISTA term.

What it adds to the stock Trainer:

- ``compute_loss`` calls :func:`vista.model.forward_with_vista`; the loss is a per-micro-batch mean (CE mean over
  supervised tokens + VISTA mean over samples with an image, as LLaVA's own training does) and the Trainer divides
  it by the gradient-accumulation steps (``loss_is_scaled_for_ga = False``).
- The metrics in :data:`METRICS` (``ce_loss``, ``vista_loss``, ``vista_similarity``) are logged averaged over the
  logging window (TRL style: sums accumulate in one device tensor, one gather and one host copy per logging step);
  a new loss part is one more :class:`Metric` line. Unweighted metrics are means over micro-batches (so ``loss ~=
  ce_loss + vista_loss`` when VISTA is enabled); ``vista_similarity`` is a mean over samples with an image
  (text-only micro-batches do not dilute it), and ``vista_samples`` counts them. With VISTA disabled (the
  cross-entropy baseline) ``vista_loss`` and ``vista_similarity`` are still computed, without gradient, and logged
  as diagnostics of the same quantity: they are not part of ``loss``, which equals ``ce_loss``.
- ``vista -q``: the Trainer's progress bar and its printed log dicts are left out (the logs still reach
  ``state.log_history`` and the configured ``report_to`` integrations).
- A NaN or Inf loss stops the run with a :class:`NonFiniteLossError` naming the first bad step and its loss parts.
  The Trainer's ``logging_nan_inf_filter`` (which would replace the logged value and hide the problem) is turned
  off. Detection costs no extra host sync: the first bad step and its parts are recorded on the device every
  micro-batch (``torch.where``), and checked when the Trainer syncs anyway - at every logging step, before every
  checkpoint save, and at the end of training - across all ranks at once (so no rank is left waiting). Why not
  ``torch._assert_async``: on CUDA it raises a device-side assert that poisons the CUDA context and cannot report
  the step or the loss parts. Consequence: optimizer steps between the first bad step and the next logging step may
  apply non-finite updates, but no checkpoint is ever written after a non-finite loss; ``logging_steps=1`` checks
  every step.
- ``group_by_modality_length``: LLaVA's sampler (image and text-only samples in separate length-sorted megabatches).
- At the end of training, the dataset's skip report (samples skipped with ``on_bad_sample="skip"``) is logged and
  stored in ``state.log_history``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from vista.console import quiet_console
from vista.errors import UsageError
from vista.loss import VistaConfig
from vista.model import VistaForwardOutput, forward_with_vista

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    """One logged training metric, averaged over the logging window.

    Attributes:
        name: the key in the Trainer's logs (tensorboard, ``trainer_state.json``).
        value: the micro-batch's scalar (a device tensor; detached and cast to float32 when recorded).
        weight: None for a mean over micro-batches (a loss part: also reported when the loss turns non-finite);
            else a per-micro-batch count to weight by (a mean over what it counts), whose window total is logged as
            ``weight_name`` (None: not logged).
    """

    name: str
    value: Callable[[VistaForwardOutput], Tensor]
    weight: Callable[[VistaForwardOutput], Tensor] | None = None
    weight_name: str | None = None


METRICS: tuple[Metric, ...] = (
    Metric("ce_loss", lambda r: r.ce_loss),
    Metric("vista_loss", lambda r: r.vista.loss),
    Metric("vista_similarity", lambda r: r.vista.similarity, lambda r: r.vista.num_samples, "vista_samples"),
)


@dataclass(frozen=True)
class _Layout:
    """Slots of the per-rank statistics vector (one device tensor) gathered at logging steps."""

    metrics: tuple[Metric, ...]

    @property
    def parts(self) -> tuple[Metric, ...]:
        """The unweighted metrics: the loss parts."""
        return tuple(m for m in self.metrics if m.weight is None)

    def sum_slot(self, i: int) -> int:
        return 2 * i

    def weight_slot(self, i: int) -> int:
        return 2 * i + 1

    @property
    def batches(self) -> int:
        return 2 * len(self.metrics)

    @property
    def bad(self) -> slice:
        """First non-finite micro-batch: optimizer step, loss, then each loss part."""
        start = self.batches + 1
        return slice(start, start + 2 + len(self.parts))

    @property
    def size(self) -> int:
        return self.bad.stop


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the run stops instead of zeroing or skipping the loss."""


SAMPLING_KEYS = ("group_by_modality_length", "length_group_megabatches", "sorted_micro_batches")


def sampling_options(data: dict[str, Any]) -> dict[str, Any]:
    """The :class:`VistaTrainer` keyword arguments that a config's ``data`` section sets (LLaVA's length-grouped
    sampler): one place for every training entry point (``vista train``'s LLaVA recipe and ``model.pretrained``)."""
    return {key: data[key] for key in SAMPLING_KEYS}


def check_sorted_micro_batches(enabled: bool, world_size: int) -> None:
    """Length-sorted micro-batches (``data.sorted_micro_batches``) are a one-process setting.

    Raises:
        UsageError: ``enabled`` with ``world_size`` > 1 (across processes LLaVA's micro-batches of equal total
            length keep the ranks in step).
    """
    if enabled and world_size > 1:
        raise UsageError(
            f"data.sorted_micro_batches with {world_size} processes: it orders one process's micro-batches; "
            "across processes LLaVA's balanced micro-batches keep the ranks in step (set it to false)"
        )


class VistaTrainer(Trainer):
    """A ``Trainer`` training with ``CE + VISTA`` (see the module docstring).

    Args:
        vista_config: how the VISTA term is computed (``enabled=False`` trains the CE baseline and still logs the
            similarity).
        group_by_modality_length: sample with ``vista.data.ModalityLengthGroupedSampler``; the dataset must expose
            ``modality_lengths`` (positive for samples with an image, negative for text-only ones).
        length_group_megabatches: with ``group_by_modality_length``, the sampler's ``megabatch_mult`` (pools of
            that many megabatches are sorted by length: less padding).
        sorted_micro_batches: with ``group_by_modality_length`` and gradient accumulation on one process, the
            micro-batches of an optimizer step are its records cut by length (the sampler's ``balance=False``)
            instead of balanced in total length: less padding, the same records per step.
        *args, **kwargs: passed to ``transformers.Trainer``.

    Attributes:
        metrics: what is logged (default :data:`METRICS`); a subclass logs another loss part with one more line,
            e.g. ``metrics = (*METRICS, Metric("l2t_loss", lambda r: r.extra_loss))``.
    """

    metrics: tuple[Metric, ...] = METRICS

    def __init__(
        self,
        *args: Any,
        vista_config: VistaConfig,
        group_by_modality_length: bool = False,
        length_group_megabatches: int = 1,
        sorted_micro_batches: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_sorted_micro_batches(sorted_micro_batches, self.args.world_size)
        self.sorted_micro_batches = sorted_micro_batches
        self.vista_config = vista_config
        self.group_by_modality_length = group_by_modality_length
        self.length_group_megabatches = length_group_megabatches
        self.loss_is_scaled_for_ga = False  # per-micro-batch means: let the Trainer divide by GA steps
        if self.args.logging_nan_inf_filter:
            logger.info(
                "VistaTrainer: logging_nan_inf_filter turned off (a non-finite loss stops the run instead)"
            )
            self.args.logging_nan_inf_filter = False
        if quiet_console():  # `vista -q`: the Trainer's bar and printed log dicts go; log_history stays
            for callback in (PrinterCallback, ProgressCallback):
                self.remove_callback(callback)
        self._layout = _Layout(self.metrics)
        self._stats: Tensor | None = None
        self._pending_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------------ the loss

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """``CE + VISTA`` for one micro-batch (a scalar mean); records its parts for logging and the NaN check."""
        result = forward_with_vista(model, inputs, self.vista_config)
        if model.training:
            self._record(result)
        return (result.loss, result.outputs) if return_outputs else result.loss

    def _record(self, result: Any) -> None:
        """Accumulate the window sums and remember the first non-finite step, all on the device (no sync)."""
        layout, loss = self._layout, result.loss.detach().float()
        if self._stats is None or self._stats.device != loss.device:
            self._stats = self._empty_stats(loss.device)
        stats = self._stats
        for i, metric in enumerate(layout.metrics):
            value = metric.value(result).detach().float()
            if metric.weight is None:
                stats[layout.sum_slot(i)] += value
            else:
                weight = metric.weight(result).detach().float()
                stats[layout.sum_slot(i)] += value * weight
                stats[layout.weight_slot(i)] += weight
        stats[layout.batches] += 1
        bad_step = layout.bad.start
        first_bad = ~torch.isfinite(loss) & (stats[bad_step] < 0)
        step = float(self.state.global_step + 1)  # the optimizer step this micro-batch belongs to
        parts = [m.value(result).detach().float() for m in layout.parts]
        bad = torch.stack([torch.full_like(loss, step), loss, *parts])
        stats[layout.bad] = torch.where(first_bad, bad, stats[layout.bad])

    def _empty_stats(self, device: torch.device) -> Tensor:
        stats = torch.zeros(self._layout.size, device=device)
        stats[self._layout.bad.start] = -1.0
        return stats

    # ------------------------------------------------------------------------- logging and the non-finite check

    def _gather_stats(self) -> Tensor:
        """(world_size, _NUM_STATS) statistics of every rank (one collective)."""
        stats = self._stats if self._stats is not None else self._empty_stats(self.args.device)
        return self.accelerator.gather(stats[None]).reshape(-1, self._layout.size).cpu()

    def check_finite(self, gathered: Tensor | None = None) -> None:
        """Raise :class:`NonFiniteLossError` if any rank saw a non-finite loss (all ranks must call this)."""
        gathered = self._gather_stats() if gathered is None else gathered
        bad = gathered[:, self._layout.bad]  # (world_size, step + loss + parts)
        bad_ranks = (bad[:, 0] >= 0).nonzero().flatten().tolist()
        if not bad_ranks:
            return
        first = min(bad_ranks, key=lambda r: bad[r, 0].item())
        row = bad[first].tolist()
        names = ["loss", *(m.name for m in self._layout.parts)]
        values = " ".join(f"{name}={value}" for name, value in zip(names, row[1:]))
        raise NonFiniteLossError(
            f"non-finite training loss at optimizer step {int(row[0])} (rank {first}): {values}. "
            "Stopping: the loss is never zeroed or skipped. Check the data of that step, the learning rate, and the "
            "precision (fp16 overflow: try bf16 or a lower lr); resume from the last checkpoint saved before it."
        )

    def _maybe_log_save_evaluate(self, tr_loss: Tensor, *args: Any, **kwargs: Any) -> None:
        if self.control.should_log or self.control.should_save:
            gathered = self._gather_stats()
            self.check_finite(gathered)  # before anything is logged or saved
            if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
                self._pending_metrics = _window_metrics(gathered, self._layout)
                self._stats = None
        super()._maybe_log_save_evaluate(tr_loss, *args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the window's :data:`METRICS` to the Trainer's training logs."""
        if "loss" in logs and self._pending_metrics:
            logs = {**logs, **self._pending_metrics}
            self._pending_metrics = {}
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------- training and sampling

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train`` plus a final non-finite check and the dataset's skip report."""
        output = super().train(*args, **kwargs)
        self.check_finite()
        report = getattr(self.train_dataset, "skip_report", None)
        if callable(report):
            skipped = report()
            logger.info("data skip report:\n%s", skipped)
            self.state.log_history.append(
                {"data_skip_report": skipped.to_dict(), "step": self.state.global_step}
            )
        return output

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Resume model weights through ``from_pretrained``.

        transformers v5 saves LLaVA weights under the original checkpoint names (``language_model.model.*``), which
        the stock resume path loads with a non-strict ``load_state_dict``: every key misses and training silently
        continues from the current weights. ``from_pretrained`` applies the key conversion; the copy is strict.
        """
        model = model if model is not None else self.model
        folder = Path(resume_from_checkpoint)
        has_weights = (folder / "model.safetensors").is_file() or (
            folder / "model.safetensors.index.json"
        ).is_file()
        if not isinstance(model, PreTrainedModel) or not has_weights or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(model).from_pretrained(folder, dtype=model.dtype)
        model.load_state_dict(saved.state_dict(), strict=True)
        logger.info("resumed model weights from %s", folder)

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        if not self.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        from vista.data import ModalityLengthGroupedSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return ModalityLengthGroupedSampler(
            dataset.modality_lengths,
            batch_size=self.args.train_batch_size,
            world_size=self.args.world_size * self.args.gradient_accumulation_steps,
            megabatch_mult=self.length_group_megabatches,
            seed=self.args.seed,
            balance=not self.sorted_micro_batches,
        )


def _window_metrics(gathered: Tensor, layout: _Layout) -> dict[str, float]:
    """Averages over every rank's logging window (see :class:`Metric` for the weighting); one host copy."""
    totals = gathered.sum(dim=0).tolist()
    batches = totals[layout.batches]
    if batches == 0:
        return {}
    metrics = {}
    for i, metric in enumerate(layout.metrics):
        total = totals[layout.sum_slot(i)]
        if metric.weight is None:
            metrics[metric.name] = total / batches
            continue
        weight = totals[layout.weight_slot(i)]
        if metric.weight_name is not None:
            metrics[metric.weight_name] = weight
        if weight > 0:  # nothing counted in the window: no value rather than 0
            metrics[metric.name] = total / weight
    return metrics

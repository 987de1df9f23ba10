"""``ObjectivesTrainer``: :class:`vista.trainer.VistaTrainer` with the VIRAL-style term, L2T labels and diagnostics.

Adds to the logs, averaged over the logging window like ``ce_loss``:

- ``viral_loss`` (when enabled): mean over micro-batches; ``loss ~= ce_loss + vista_loss + viral_loss``.
- ``diag_*`` (:data:`vista.diagnostics.NAMES`): computed only on the micro-batches of optimizer steps that are
  logged, averaged over those micro-batches (each value over the micro-batches where it is finite; e.g. the pairwise
  cosine needs two distinct target tokens). They accumulate on the device in the trainer's logging vector, so they
  cost no host sync; the one gather per logging step is the trainer's own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers.trainer_utils import IntervalStrategy

from vista.diagnostics import NAMES
from vista.objectives import ObjectivesRuntime, forward_with_objectives
from vista.trainer import VistaTrainer

_VIRAL, _BATCHES = 0, 1
_SUMS = slice(2, 2 + len(NAMES))
_COUNTS = slice(2 + len(NAMES), 2 + 2 * len(NAMES))


class ObjectivesTrainer(VistaTrainer):
    """A ``VistaTrainer`` whose loss also holds the objectives of ``runtime`` (module docstring).

    Args:
        runtime: :class:`vista.objectives.ObjectivesRuntime` built on the model before this trainer.
        *args, **kwargs: passed to :class:`vista.trainer.VistaTrainer`.
    """

    num_extra_stats = 2 + 2 * len(NAMES)

    def __init__(self, *args: Any, runtime: ObjectivesRuntime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime

    def _logs_this_step(self) -> bool:
        """Whether the optimizer step being accumulated will be logged (host-side integers only)."""
        args = self.args
        if args.logging_strategy != IntervalStrategy.STEPS:
            return False
        step = self.state.global_step + 1
        steps = args.logging_steps
        every = steps if steps >= 1 else max(1, int(steps * max(self.state.max_steps, 1)))
        return step % every == 0 or (args.logging_first_step and step == 1)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """``CE + VISTA + VIRAL`` for one micro-batch; records parts and diagnostics for logging."""
        diagnose = bool(model.training and self.runtime.config.diagnostics and self._logs_this_step())
        result = forward_with_objectives(model, inputs, self.vista_config, self.runtime, diagnostics=diagnose)
        base = result.base
        if model.training:
            extra = torch.zeros(self.num_extra_stats, device=result.loss.device)
            extra[_VIRAL] = result.viral_loss.detach().float()
            extra[_BATCHES] = 1.0
            if result.diagnostics is not None:
                finite = torch.isfinite(result.diagnostics)
                extra[_SUMS] = torch.where(finite, result.diagnostics, torch.zeros_like(result.diagnostics))
                extra[_COUNTS] = finite.float()
            self._record(
                result.loss,
                base.ce_loss,
                base.vista.loss,
                base.vista.similarity,
                base.vista.num_samples,
                extra=extra,
            )
        return (result.loss, base.outputs) if return_outputs else result.loss

    def _extra_metrics(self, totals: Tensor) -> dict[str, float]:
        metrics: dict[str, float] = {}
        batches = totals[_BATCHES].item()
        if self.runtime.config.viral.enabled and batches:
            metrics["viral_loss"] = totals[_VIRAL].item() / batches
        sums, counts = totals[_SUMS].tolist(), totals[_COUNTS].tolist()
        for name, total, count in zip(NAMES, sums, counts):
            if count > 0:
                metrics[name] = total / count
        return metrics

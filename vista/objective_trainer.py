"""``ObjectivesTrainer``: :class:`vista.trainer.VistaTrainer` with the VIRAL-style term, L2T labels and diagnostics.

Adds to the logs, averaged over the logging window like ``ce_loss`` (each one :class:`vista.trainer.Metric` line):

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
from vista.objectives import ObjectivesOutput, ObjectivesRuntime, forward_with_objectives
from vista.trainer import METRICS, Metric, VistaTrainer


def _on_base(metric: Metric) -> Metric:
    """``metric`` read from an :class:`ObjectivesOutput`'s ``base`` (the CE + VISTA forward)."""
    weight = metric.weight
    return Metric(
        metric.name,
        lambda r: metric.value(r.base),
        None if weight is None else (lambda r: weight(r.base)),
        metric.weight_name,
    )


def _diagnostic(index: int, name: str) -> Metric:
    """Diagnostic ``index``, averaged over the micro-batches where it was computed and finite."""

    def finite(r: ObjectivesOutput) -> Tensor:
        if r.diagnostics is None:
            return torch.zeros((), device=r.loss.device)
        return torch.isfinite(r.diagnostics[index]).float()

    def value(r: ObjectivesOutput) -> Tensor:
        if r.diagnostics is None:
            return torch.zeros((), device=r.loss.device)
        return torch.nan_to_num(r.diagnostics[index], nan=0.0, posinf=0.0, neginf=0.0)

    return Metric(name, value, finite)


def objective_metrics(viral: bool, diagnostics: bool) -> tuple[Metric, ...]:
    """The logged layout: :data:`vista.trainer.METRICS`, then ``viral_loss`` and ``diag_*`` when enabled."""
    metrics = [_on_base(m) for m in METRICS]
    if viral:
        metrics.append(Metric("viral_loss", lambda r: r.viral_loss))
    if diagnostics:
        metrics += [_diagnostic(i, name) for i, name in enumerate(NAMES)]
    return tuple(metrics)


class ObjectivesTrainer(VistaTrainer):
    """A ``VistaTrainer`` whose loss also holds the objectives of ``runtime`` (module docstring).

    Args:
        runtime: :class:`vista.objectives.ObjectivesRuntime` built on the model before this trainer.
        *args, **kwargs: passed to :class:`vista.trainer.VistaTrainer`.
    """

    def __init__(self, *args: Any, runtime: ObjectivesRuntime, **kwargs: Any) -> None:
        self.runtime = runtime
        self.metrics = objective_metrics(runtime.config.viral.enabled, runtime.config.diagnostics)
        super().__init__(*args, **kwargs)

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
        if model.training:
            self._record(result)
        return (result.loss, result.base.outputs) if return_outputs else result.loss

"""Add VISTA to a stock ``transformers.Trainer`` or TRL's ``SFTTrainer`` (any family of :mod:`vista.families`).

Why a subclass and not ``Trainer(compute_loss_func=...)``: ``compute_loss_func(outputs, labels,
num_items_in_batch)`` sees neither ``input_ids`` (where the image tokens are) nor the token embeddings, both of which
the VISTA term needs. :func:`with_vista` returns a subclass of any Trainer class whose ``compute_loss`` is
:func:`vista.model.forward_with_vista` (the CE on the supervised positions + the VISTA term, from hooks on one forward pass)::

    from transformers import Trainer, TrainingArguments
    from vista.recipes import with_vista
    from vista.loss import VistaConfig

    args = TrainingArguments(..., remove_unused_columns=False)  # keep the columns the collator reads
    trainer = with_vista(Trainer)(model=model, args=args, train_dataset=ds, data_collator=collator,
                                  vista_config=VistaConfig())          # anchor="mean" for the mean of image tokens
    trainer.train()

    from trl import SFTTrainer, SFTConfig
    trainer = with_vista(SFTTrainer)(model=model, args=SFTConfig(..., remove_unused_columns=False), train_dataset=ds, processing_class=processor,
                                     data_collator=vista.chat_data.ChatCollator(processor), vista_config=VistaConfig())

TRL's own vision collator masks only padding in ``labels`` (``assistant_only_loss`` raises for VLMs in TRL), so pass
:class:`vista.chat_data.ChatCollator` over a :class:`vista.chat_data.ChatDataset` to train on assistant turns only.
The last VISTA term is kept in ``trainer.last_vista`` (:class:`vista.loss.VistaLossOutput`); the logged metrics of
``vista train`` (``ce_loss``, ``vista_loss``, ...) come from :class:`vista.trainer.VistaTrainer`, which is this plus
logging.
"""

from __future__ import annotations

from typing import Any, TypeVar

from vista.loss import VistaConfig
from vista.model import forward_with_vista

T = TypeVar("T", bound=type)


def with_vista(trainer_class: T) -> T:
    """A subclass of ``trainer_class`` (``transformers.Trainer`` or a subclass such as TRL's ``SFTTrainer``) that
    trains with ``CE + VISTA``; it takes one extra keyword argument, ``vista_config`` (:class:`VistaConfig`)."""

    class VistaRecipeTrainer(trainer_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, vista_config: VistaConfig | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.vista_config = vista_config or VistaConfig()
            self.last_vista = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = forward_with_vista(model, inputs, self.vista_config)
            self.last_vista = result.vista
            return (result.loss, result.outputs) if return_outputs else result.loss

    VistaRecipeTrainer.__name__ = VistaRecipeTrainer.__qualname__ = f"{trainer_class.__name__}WithVista"
    return VistaRecipeTrainer  # type: ignore[return-value]


def as_hf_dataset(chat_dataset: Any) -> Any:
    """A ``datasets.Dataset`` holding a :class:`vista.chat_data.ChatDataset`'s samples (``text``, ``images`` (PIL),
    ``input_ids``, ``labels``), for trainers that require one (TRL's ``SFTTrainer``); batch it with
    :class:`vista.chat_data.ChatCollator`, with ``remove_unused_columns=False`` in the trainer's arguments (by
    default a Trainer drops the columns its model's forward does not take, ``text`` and ``images`` among them)."""
    import datasets

    samples = [chat_dataset[i] for i in range(len(chat_dataset))]
    columns = {key: [sample[key] for sample in samples] for key in ("text", "images", "input_ids", "labels")}
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "images": datasets.Sequence(datasets.Image()),
            "input_ids": datasets.Sequence(datasets.Value("int64")),
            "labels": datasets.Sequence(datasets.Value("int64")),
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)

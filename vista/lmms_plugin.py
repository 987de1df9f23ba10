"""lmms-eval model plugin: evaluate any checkpoint the vista training pipeline wrote.

Registered through the ``lmms_eval.models`` entry point (``pyproject.toml``: ``vista =
"vista.lmms_plugin:MANIFEST"``), so ``lmms-eval --model vista --model_args pretrained=DIR`` and ``vista eval`` find
it. A checkpoint is a transformers ``LlavaForConditionalGeneration`` + processor saved with ``save_pretrained``;
the processor saved with it is the image preprocessing used in training, applied through
:func:`vista.images.prepare_images` with the checkpoint's recorded ``image_aspect`` (``pad`` or ``resize``), so
every image is seen exactly as in training (``image_aspect=`` in ``--model_args`` overrides it, with a warning).

The conversation template must be the one used in training (a mismatch is a known cause of wrong numbers). It is
``template=NAME`` in ``--model_args`` if given, otherwise read from the run metadata beside the checkpoint
(``vista_run.json`` or ``run_metadata.json`` in the checkpoint folder or its parent; key ``template`` or
``conversation_template`` at the top level, or ``config.data.template``: ``vista.run_metadata.recorded_template``).
Without either it is an error, never a silent default. Prompts are ``get_template(name).render_prompt([{"role": "user", "content":
"<image>\\n" + context}])``, exactly the prefix of the training text; images missing from the context are put
first, one ``<image>`` per image, as in LLaVA.

A checkpoint of any family of :mod:`vista.families` trained with ``model.pretrained`` (recorded template
``chat_template``) is prompted with its own chat template instead: ``processor.apply_chat_template`` of one user turn
(:func:`vista.chat_data.user_turn`: the images where the context has ``<image>``, else first) with the generation
prompt, and the images go to the processor as they are (as :class:`vista.chat_data.ChatDataset` feeds them in
training; the processor resizes and tiles them). The text the template writes around an answer (the gap after the
generation prompt, the end of turn) is found by rendering (:func:`vista.chat_data.assistant_affixes`); generation
stops at the end-of-turn token.

Decoding is greedy (``do_sample=False``), batched (``batch_size``, left padding); a task asking for sampling gets
greedy decoding and a warning. ``loglikelihood`` scores ``gap + continuation`` after the prompt, the way the
training text continues, and returns the mean token loss (lmms-eval's convention, see ``VistaLlava.loglikelihood``).
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm

from vista.builder import DTYPES
from vista.images import as_rgb_images, prepare_images, resolve_image_aspect
from vista.run_metadata import CHAT_TEMPLATE, resolve_template_name
from vista.templates import IMAGE_TOKEN, ConversationTemplate, get_template


def MANIFEST():  # noqa: N802 (the entry point's name, declared in pyproject.toml)
    """The ``lmms_eval.models`` entry point: lmms-eval's registry calls it to get the ``ModelManifest``.

    A callable rather than an instance because importing ``lmms_eval.models.registry_v2`` runs
    ``lmms_eval.models/__init__``, which loads the entry points, i.e. this module: an instance built at import
    time would not exist yet when this module is imported before lmms-eval's registry.
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="vista", simple_class_path="vista.lmms_plugin.VistaLlava")


try:  # lmms-eval >= 0.6 normalises every model output with unwrap_generation_output ...
    from lmms_eval.api.instance import GenerationResult, unwrap_generation_output

    # ... which (0.7.3) turns a (float, bool) log-likelihood pair into its str(): wrap it so it passes unchanged.
    _WRAP_LOGLIK = isinstance(unwrap_generation_output((0.5, True))[0], str)
except ImportError:  # 0.3.x: plain tuples
    _WRAP_LOGLIK = False


def _to_images(visuals: object) -> list[Image.Image]:
    """Flatten lmms-eval visuals (None, an image, a path, or nested lists of them) into 8-bit RGB PIL images."""
    return as_rgb_images(visuals)


def _cut_at_stops(text: str, until: Sequence[str]) -> str:
    for stop in until:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


class VistaLlava(lmms):
    """A vista checkpoint (LLaVA recipe, or any family trained with ``model.pretrained``) as an lmms-eval model
    (``--model vista``).

    model_args: ``pretrained`` (checkpoint folder), ``template`` and ``image_aspect`` (optional, see module
    docstring; a value contradicting the checkpoint's run metadata is used with a warning; ``image_aspect`` does
    not apply to ``chat_template`` checkpoints, whose processor preprocesses images as in training), ``device``
    ("cpu"), ``dtype`` ("float32" | "bfloat16" | "float16"), ``batch_size`` (generation batch, left padded),
    ``max_new_tokens`` (default when a task sets none), ``max_rounds`` (cap for multi-round tasks).
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        template: str | None = None,
        image_aspect: str | None = None,
        device: str | None = "cpu",
        dtype: str = "float32",
        batch_size: int | str | None = 1,
        max_new_tokens: int = 128,
        max_rounds: int = 8,
        **kwargs,
    ) -> None:
        super().__init__()
        from transformers import AutoModelForImageTextToText, AutoProcessor

        unknown = {k: v for k, v in kwargs.items() if k not in ("max_batch_size",) and v is not None}
        if unknown:
            raise ValueError(f"vista model: unknown model_args {sorted(unknown)}")
        if dtype not in DTYPES:
            raise ValueError(f"vista model: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not Path(pretrained).is_dir():
            raise FileNotFoundError(f"vista model: checkpoint folder not found: {pretrained}")
        self.checkpoint = str(pretrained)
        self.template_name = resolve_template_name(pretrained, template)
        self.chat = self.template_name == CHAT_TEMPLATE  # the processor's own chat template
        if self.chat:
            if image_aspect is not None:
                warnings.warn(
                    f"image_aspect={image_aspect} is ignored: checkpoint {pretrained} was trained with its "
                    "processor's own image preprocessing, which evaluation applies too",
                    stacklevel=2,
                )
            self.image_aspect = None
        else:
            self.template: ConversationTemplate = get_template(self.template_name)
            self.image_aspect = resolve_image_aspect(pretrained, image_aspect)
        self._device = torch.device(device or "cpu")
        self.processor = AutoProcessor.from_pretrained(pretrained)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # generation appends on the right
        if self.chat:
            self._set_chat_affixes()
        else:
            self.template.check_tokenizer(self.tokenizer)
        self.model = AutoModelForImageTextToText.from_pretrained(pretrained, dtype=DTYPES[dtype])
        self.model.to(self._device).eval()
        self.batch_size_per_gpu = int(batch_size) if str(batch_size or 1).isdigit() else 1
        self.max_new_tokens = int(max_new_tokens)
        self.max_rounds = int(max_rounds)
        self._warned_sampling = False

    # ---- prompts -------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    def _set_chat_affixes(self) -> None:
        """The chat template's answer gap and end of turn, and the end-of-turn token generation stops at."""
        from vista.chat_data import assistant_affixes

        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError(
                f"vista model: template={CHAT_TEMPLATE} but the processor of {self.checkpoint} has no chat template"
            )
        self.answer_gap, self.end_of_turn = assistant_affixes(self.processor)
        first = self.tokenizer(self.end_of_turn, add_special_tokens=False)["input_ids"][:1]
        special = set(self.tokenizer.all_special_ids)
        self.stop_ids = sorted({self.tokenizer.eos_token_id, *[i for i in first if i in special]} - {None})

    def build_prompt(self, context: str, num_images: int) -> str:
        """The training template's prompt for one user turn holding ``context`` and ``num_images`` images."""
        if self.chat:
            from vista.chat_data import user_turn

            turn = user_turn(context, num_images)
            return self.processor.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        found = context.count(IMAGE_TOKEN)
        if found == 0 and num_images:
            context = " ".join([IMAGE_TOKEN] * num_images) + "\n" + context
        elif found != num_images:
            raise ValueError(f"the prompt has {found} {IMAGE_TOKEN} but the document has {num_images} images")
        return self.template.render_prompt([{"role": "user", "content": context}], add_generation_prompt=True)

    def _encode(self, prompts: list[str], images: list[Image.Image]) -> dict:
        """LLaVA recipe: padded model inputs of ``prompts`` holding ``images`` in order (flat list)."""
        if images:  # the training preprocessing (vista.images); the processor then expands each <image>
            images = prepare_images(images, self.processor.image_processor, self.image_aspect)
        inputs = self.processor(text=prompts, images=images or None, return_tensors="pt", padding=True)
        inputs = {k: v.to(self._device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def _inputs(self, prompts: list[str], images: list[list[Image.Image]]) -> dict:
        """Padded model inputs of ``prompts``, ``images[i]`` the images of prompt i (left padding)."""
        if not self.chat:
            return self._encode(prompts, [image for per_prompt in images for image in per_prompt])
        # the processor's own preprocessing (resizing, tiling), as vista.chat_data feeds images in training
        inputs = self.processor(
            text=prompts,
            images=images if any(images) else None,
            return_tensors="pt",
            padding=True,
            padding_side="left",
        )
        return {
            k: v.to(self._device, self.model.dtype) if v.is_floating_point() else v.to(self._device)
            for k, v in inputs.items()
        }

    def _doc(self, task: str, split: str, doc_id: int) -> dict:
        return self.task_dict[task][split][doc_id]

    # ---- generation ----------------------------------------------------------------------------------------
    def _stop_strings(self, gen_kwargs: dict) -> list[str]:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        if not all(isinstance(u, str) for u in until):
            raise ValueError(f"gen_kwargs['until'] must be a string or a list of strings, got {until!r}")
        end_of_turn = self.end_of_turn.strip() if self.chat else self.template.end_of_turn
        return until + ([end_of_turn] if end_of_turn.strip() else [])

    def _generate(self, prompts: list[str], images: list[list[Image.Image]], gen_kwargs: dict) -> list[str]:
        """Greedy continuations of a batch of prompts (all with images or all without; ``images[i]`` of prompt i)."""
        if (
            gen_kwargs.get("do_sample") or (gen_kwargs.get("temperature") or 0) > 0
        ) and not self._warned_sampling:
            warnings.warn(
                "vista model decodes greedily; the task's sampling settings are ignored", stacklevel=2
            )
            self._warned_sampling = True
        inputs = self._inputs(prompts, images)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                do_sample=False,
                num_beams=1,
                max_new_tokens=int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.stop_ids if self.chat else self.tokenizer.eos_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        until = self._stop_strings(gen_kwargs)
        return [_cut_at_stops(t, until).strip() for t in texts]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers, batched by (generation settings, with/without images), in the requests' order."""
        prepared = []
        for context, gen_kwargs, doc_to_visual, doc_id, task, split in (r.args for r in requests):
            images = _to_images(doc_to_visual(self._doc(task, split, doc_id)))
            prepared.append((self.build_prompt(context, len(images)), images, dict(gen_kwargs)))
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (_, images, gen_kwargs) in enumerate(prepared):
            groups[(json.dumps(gen_kwargs, sort_keys=True, default=str), bool(images))].append(i)
        results: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="vista generate", disable=self.rank != 0)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                prompts = [prepared[i][0] for i in chunk]
                images = [prepared[i][1] for i in chunk]
                for i, text in zip(chunk, self._generate(prompts, images, prepared[chunk[0]][2])):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", (prepared[i][0], prepared[i][2]), text)
                bar.update(len(chunk))
        bar.close()
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[tuple[str, ...]]:
        """lmms-eval's multi-round protocol: round 0 answers the context; from round 1 on the task's
        ``doc_to_text(doc, previous_output=..., round_idx=k, previous_round_info=...)`` returns (visuals,
        context, terminal, outputs, info) until ``terminal``. Returns the task's outputs per request."""
        results = []
        for context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split in (
            r.args for r in requests
        ):
            doc = self._doc(task, split, doc_id)
            visuals, outputs, info = doc_to_visual(doc), [], None
            for round_idx in range(self.max_rounds + 1):
                if round_idx > 0:
                    visuals, context, terminal, outputs, info = doc_to_text(
                        doc, previous_output=list(outputs), round_idx=round_idx, previous_round_info=info
                    )
                    outputs = list(outputs)
                    if terminal:
                        break
                images = _to_images(visuals)
                outputs.append(
                    self._generate([self.build_prompt(context, len(images))], [images], dict(gen_kwargs))[0]
                )
            else:
                raise RuntimeError(f"{task} doc {doc_id}: no terminal signal after {self.max_rounds} rounds")
            results.append(tuple(outputs))
        return results

    # ---- scoring -------------------------------------------------------------------------------------------
    def _continuation_ids(self, continuation: str) -> torch.Tensor:
        text = continuation if continuation[:1].isspace() else self.template.assistant_gap + continuation
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if len(ids) == 0:
            raise ValueError(f"empty continuation {continuation!r}")
        return ids

    def _scoring_inputs(self, context: str, continuation: str, images: list[Image.Image]) -> tuple[dict, int]:
        """Model inputs of prompt + continuation and the index of the first continuation token.

        LLaVA recipe: the prompt's ids, then the continuation (with the template's assistant gap) tokenised alone.
        Chat template: ``prompt + gap + continuation`` tokenised as one text by the processor (as training
        tokenises a conversation), the continuation being what follows the prompt's ids.

        Raises:
            ValueError: empty continuation; (chat) the prompt's tokens are not a prefix of the whole text's.
        """
        prompt = self.build_prompt(context, len(images))
        if not self.chat:
            inputs = self._encode([prompt], images)
            cont = self._continuation_ids(continuation).to(self._device)
            n_prompt = inputs["input_ids"].shape[1]
            inputs["input_ids"] = torch.cat([inputs["input_ids"], cont[None]], dim=1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            return inputs, n_prompt
        gap = "" if continuation[:1].isspace() else self.answer_gap
        inputs = self._inputs([prompt + gap + continuation], [images])
        prompt_ids = self._inputs([prompt], [images])["input_ids"][0]
        n_prompt = len(prompt_ids)
        if inputs["input_ids"].shape[1] <= n_prompt:
            raise ValueError(f"empty continuation {continuation!r}")
        if not torch.equal(inputs["input_ids"][0, :n_prompt], prompt_ids):
            raise ValueError(
                f"continuation {continuation!r}: the prompt's tokens change when it is appended (the tokenizer merges "
                "across the boundary), so its log-likelihood cannot be separated"
            )
        return inputs, n_prompt

    def loglikelihood(self, requests: list[Instance]) -> list:
        """(mean negative log-likelihood per continuation token in nats, whether greedy decoding yields it).

        lmms-eval's convention, not the base class docstring's: its ``llava`` model (used by the paper) and
        ``llava_hf`` return the mean token loss, and its ``multiple_choice`` scoring picks the ``argmin``.
        On lmms-eval versions whose output normalisation would stringify the pair, each pair is wrapped in a
        ``GenerationResult`` (unwrapped by lmms-eval before scoring).
        """
        results = []
        for context, target, doc_to_visual, doc_id, task, split in tqdm(
            [r.args for r in requests], desc="vista loglikelihood", disable=self.rank != 0
        ):
            doc = self._doc(task, split, doc_id)
            continuation = target if isinstance(target, str) else target(doc)
            images = _to_images(doc_to_visual(doc))
            inputs, n_prompt = self._scoring_inputs(context, continuation, images)
            cont = inputs["input_ids"][0, n_prompt:]
            with torch.inference_mode():
                logits = self.model(**inputs).logits[0, n_prompt - 1 : -1].float()  # (C, V): predicts cont
            nll = float(torch.nn.functional.cross_entropy(logits, cont, reduction="mean"))
            greedy = bool((logits.argmax(-1) == cont).all())
            results.append(GenerationResult(text=(nll, greedy)) if _WRAP_LOGLIK else (nll, greedy))
            self.cache_hook.add_partial("loglikelihood", (context, continuation), (nll, greedy))
        return results

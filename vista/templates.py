"""Conversation templates: how a conversation becomes the text a model is trained on and prompted with.

Four templates, each faithful to the code that trained its models:

- ``plain`` (LLaVA pretraining; TinyLLaVA's ``pretrain`` is the same): ``<image>`` followed by the caption and
  ``"\\n"``. The user's text is dropped; only the caption and its newline are supervised.
- ``vicuna_v1`` (LLaVA-1.5): ``"{system} USER: {q} ASSISTANT: {a}</s>USER: ..."``.
- ``phi`` (TinyLLaVA_Factory's ``phi``): the same layout, each answer ending with ``<|endoftext|>``.
- ``chatml`` (SmolLM2-Instruct's own chat template, the ``small`` profile): ``"<|im_start|>system\\n{system}<|im_end|>\\n"``
  then ``"<|im_start|>user\\n{q}<|im_end|>\\n<|im_start|>assistant\\n{a}<|im_end|>\\n"`` per exchange; the
  same text as the tokenizer's ``apply_chat_template`` with its default system prompt (checked in the tests).

In ``vicuna_v1``, ``phi`` and ``chatml`` a user turn holding exactly one ``<image>`` is rewritten as ``"<image>\\n" + text``
(LLaVA's and TinyLLaVA's preprocessing); turns with several images keep them where they are.

Training and evaluation share one renderer: :meth:`ConversationTemplate.render_prompt` builds the evaluation prompt
(ending with ``"ASSISTANT:"``) and the training text is the same string continued by ``" {answer}{end_of_turn}"``.

Tokenization (:meth:`ConversationTemplate.tokenize`) encodes the whole rendered text once, with character offsets,
and splits the tokens into the template's parts (fixed text, user text, supervised answer). The whole therefore
equals the concatenation of its parts by construction, provided no token straddles a boundary between a supervised
and an unsupervised part. When one does (a template/tokenizer mismatch) or when user text contains a special token
such as ``</s>``, :class:`TemplateMismatchError` is raised: the sample is never silently dropped or mis-masked.
This needs a fast (Rust-backed) tokenizer, which every transformers v5 tokenizer is.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
from transformers import PreTrainedTokenizerBase

from vista.loss import IGNORE_INDEX  # noqa: F401 (re-exported: labels use it)

IMAGE_TOKEN = "<image>"  # the LLaVA-JSON image placeholder, also the tokenizer's image token
ROLES = ("user", "assistant")
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# SmolLM2-Instruct's chat template inserts this system turn when the conversation has none.
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


class ConversationError(ValueError):
    """A conversation the template cannot render. ``reason`` is a stable key used to count skips."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TemplateMismatchError(ConversationError):
    """The tokenizer does not split the rendered text along the template's parts."""

    def __init__(self, detail: str) -> None:
        super().__init__("template_mismatch", detail)


@dataclass(frozen=True)
class TokenizedConversation:
    """One tokenized conversation (image placeholders already expanded).

    Attributes:
        input_ids: (L,) int64 token ids; each image contributes ``num_image_tokens`` copies of the image-token id.
        labels: (L,) int64, equal to ``input_ids`` on supervised positions and ``IGNORE_INDEX`` elsewhere
            (not shifted: the model shifts).
        num_images: images in the conversation.
    """

    input_ids: np.ndarray
    labels: np.ndarray
    num_images: int

    @property
    def num_supervised(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class ConversationTemplate:
    """A conversation layout: ``system + sum_turns(user_prefix + user + user_suffix + assistant_prefix``
    ``+ assistant_gap + answer + end_of_turn)``. The last three pieces are supervised.

    Attributes:
        name: registry name.
        system: text before the first turn (including its separator), unsupervised.
        user_prefix, user_suffix: around each user turn's text.
        assistant_prefix: ends every prompt; the evaluation prompt stops right after it.
        assistant_gap: between ``assistant_prefix`` and the answer; supervised, because BPE tokenizers merge this
            space into the answer's first token.
        end_of_turn: closes every answer (supervised, so the model learns to stop).
        images_only_user: the user's text is replaced by its ``<image>`` placeholders (``plain``).
        image_first: a user turn with one ``<image>`` is rewritten ``"<image>\\n" + text`` (LLaVA preprocessing).
        single_exchange: exactly one user turn and one assistant turn (``plain``).
    """

    name: str
    system: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_gap: str
    end_of_turn: str
    images_only_user: bool = False
    image_first: bool = True
    single_exchange: bool = False

    # ---- rendering ------------------------------------------------------------------------------------------
    def render_prompt(self, turns: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The text of ``turns`` (dicts with ``role`` "user"|"assistant" and ``content`` str).

        With ``add_generation_prompt`` the turns must end with a user turn and the text ends with the assistant
        prefix (``"... ASSISTANT:"``), ready for generation; this is exactly the prefix of the training text.
        Without it the turns must end with an assistant turn and the result is the full training text.
        """
        return "".join(text for text, _, _ in self.segments(turns, add_generation_prompt))

    def segments(
        self, turns: Sequence[dict], add_generation_prompt: bool = False
    ) -> list[tuple[str, bool, bool]]:
        """The rendered text as ``(text, supervised, is_content)`` parts; ``is_content`` marks user/answer text."""
        self.validate_turns(turns, add_generation_prompt)
        parts: list[tuple[str, bool, bool]] = [(self.system, False, False)]
        for turn in turns:
            if turn["role"] == "user":
                parts += self._user_parts(turn["content"])
            else:
                parts.append((self.assistant_gap, True, False))
                parts.append((turn["content"], True, True))
                parts.append((self.end_of_turn, True, False))
        return [p for p in parts if p[0]]

    def _user_parts(self, content: str) -> list[tuple[str, bool, bool]]:
        """A user turn's ``segments``: unsupervised (L2T's template supervises the text, vista.objectives)."""
        return [(self.user_prefix, False, False), (self._user_text(content), False, True),
                (self.user_suffix + self.assistant_prefix, False, False)]  # fmt: skip

    def _user_text(self, content: str) -> str:
        count = content.count(IMAGE_TOKEN)
        if self.images_only_user:
            return IMAGE_TOKEN * count
        if self.image_first and count == 1:
            text = content.replace(IMAGE_TOKEN, "").strip()
            return (IMAGE_TOKEN + "\n" + text).strip()
        return content

    def validate_turns(self, turns: Sequence[dict], add_generation_prompt: bool = False) -> None:
        """Raise :class:`ConversationError` unless ``turns`` alternate user/assistant, starting with user and
        ending with assistant (user if ``add_generation_prompt``), with non-empty string contents and ``<image>``
        only in user turns."""
        if not turns:
            raise ConversationError("empty_conversation", "the conversation has no turns")
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
                raise ConversationError(
                    "malformed", f"turn {i} is not a dict with 'role' and 'content': {turn!r}"
                )
            if turn["role"] not in ROLES:
                raise ConversationError(
                    "malformed", f"turn {i} has role {turn['role']!r}; expected one of {ROLES}"
                )
            if not isinstance(turn["content"], str):
                raise ConversationError(
                    "malformed", f"turn {i} content is {type(turn['content']).__name__}, not str"
                )
            if not turn["content"].strip():
                raise ConversationError("empty_conversation", f"turn {i} ({turn['role']}) is empty")
            expected = ROLES[i % 2]
            if turn["role"] != expected:
                raise ConversationError(
                    "role_order",
                    f"turn {i} is {turn['role']!r}, expected {expected!r} (turns must alternate, user first)",
                )
            if turn["role"] == "assistant" and IMAGE_TOKEN in turn["content"]:
                raise ConversationError(
                    "image_count_mismatch", f"turn {i} (assistant) contains {IMAGE_TOKEN}"
                )
        last = "user" if add_generation_prompt else "assistant"
        if turns[-1]["role"] != last:
            raise ConversationError(
                "role_order", f"the conversation ends with a {turns[-1]['role']} turn, expected {last}"
            )
        if self.single_exchange and len(turns) != (1 if add_generation_prompt else 2):
            raise ConversationError(
                "role_order",
                f"template {self.name!r} takes one user turn and one assistant turn, got {len(turns)} turns",
            )

    # ---- tokenization ---------------------------------------------------------------------------------------
    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Raise ``ValueError`` if ``tokenizer`` cannot encode this template (a configuration error).

        ``<image>`` and a special-token ``end_of_turn`` (``</s>``, ``<|endoftext|>``) must each be one token.
        """
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"template {self.name!r} needs a fast tokenizer (offsets); got {type(tokenizer).__name__}"
            )
        for text in (IMAGE_TOKEN, self.end_of_turn):
            if text.startswith("<") and text.endswith(">"):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                if len(ids) != 1:
                    raise ValueError(
                        f"template {self.name!r} needs {text!r} as one token, but {type(tokenizer).__name__} "
                        f"encodes it as {len(ids)} tokens {ids}: add it as a special token or use another template"
                    )

    def tokenize(
        self, turns: Sequence[dict], tokenizer: PreTrainedTokenizerBase, num_image_tokens: int = 1
    ) -> TokenizedConversation:
        """Token ids and labels of a training conversation (only assistant turns and their end token supervised).

        Raises :class:`ConversationError` for an invalid conversation, :class:`TemplateMismatchError` when the
        tokenizer's tokens do not respect the template's parts.
        """
        (result,) = self.tokenize_batch([turns], tokenizer, num_image_tokens)
        if isinstance(result, ConversationError):
            raise result
        return result

    def tokenize_batch(
        self,
        conversations: Sequence[Sequence[dict]],
        tokenizer: PreTrainedTokenizerBase,
        num_image_tokens: int = 1,
    ) -> list[TokenizedConversation | ConversationError]:
        """:meth:`tokenize` for many conversations in one tokenizer call; errors are returned, not raised."""
        results: list[TokenizedConversation | ConversationError] = []
        valid: list[int] = []
        parts_list: list[list[tuple[str, bool, bool]]] = []
        for turns in conversations:
            try:
                parts_list.append(self.segments(turns))
                valid.append(len(results))
                results.append(None)  # type: ignore[arg-type]  # filled below
            except ConversationError as error:
                results.append(error)
        if parts_list:
            for k, result in zip(valid, _label_batch(parts_list, tokenizer, num_image_tokens)):
                results[k] = result
        return results


def special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids the tokenizer adds before any text (``[bos]`` for Llama, ``[]`` for phi-2 and the tiny tokenizer).

    They are kept (unsupervised) so that training matches ``processor(text=prompt)`` at evaluation. Ids the tokenizer
    would append after the text are not added: the template's ``end_of_turn`` closes each answer instead.
    """
    try:
        return list(_PREFIX_CACHE[tokenizer])
    except (KeyError, TypeError):
        pass
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    prefix = next(
        (full[:k] for k in range(len(full) - len(plain) + 1) if full[k : k + len(plain)] == plain), []
    )
    try:
        _PREFIX_CACHE[tokenizer] = tuple(prefix)
    except TypeError:  # not weak-referenceable: recompute next time
        pass
    return list(prefix)


_PREFIX_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> tuple[list[list[int]], list[list]]:
    """Ids and character offsets of ``texts`` without added special tokens.

    A batch goes straight to the Rust backend (``tokenizer(...)`` spends as long again converting offsets), after
    checking on its first text that the backend agrees with ``tokenizer(text)``, the call evaluation makes.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if len(texts) > 1 and backend is not None:
        # also resets truncation/padding; verbose=False: the length warning is vista's to give (data.max_length)
        reference = tokenizer(texts[0], add_special_tokens=False, verbose=False)["input_ids"]
        if backend.truncation is None and backend.padding is None:
            encodings = backend.encode_batch(texts, add_special_tokens=False)
            if encodings[0].ids != list(reference):
                raise RuntimeError(
                    f"{type(tokenizer).__name__}: backend tokenization differs from tokenizer()"
                )
            return [e.ids for e in encodings], [e.offsets for e in encodings]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return encoded["input_ids"], encoded["offset_mapping"]


def _label_batch(
    parts_list: list[list[tuple[str, bool, bool]]], tokenizer: PreTrainedTokenizerBase, num_image_tokens: int
) -> list[TokenizedConversation | ConversationError]:
    """Tokenize each rendered conversation whole and give every token the part its characters lie in.

    Vectorised over the batch: characters and tokens of all texts are laid end to end in flat arrays.
    """
    texts = ["".join(t for t, _, _ in parts) for parts in parts_list]
    ids_list, offsets_list = _encode(tokenizer, texts)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    prefix = np.asarray(special_prefix(tokenizer), dtype=np.int64)

    flat_parts = [p for parts in parts_list for p in parts]
    part_len = np.fromiter((len(t) for t, _, _ in flat_parts), np.int64, len(flat_parts))
    sup_chars = np.repeat(np.fromiter((s for _, s, _ in flat_parts), bool, len(flat_parts)), part_len)
    content_chars = np.repeat(np.fromiter((c for _, _, c in flat_parts), bool, len(flat_parts)), part_len)
    text_len = np.fromiter((len(t) for t in texts), np.int64, len(texts))
    text_start = np.cumsum(text_len) - text_len

    n_tok = np.fromiter((len(ids) for ids in ids_list), np.int64, len(ids_list))
    total = int(n_tok.sum())
    ids = np.fromiter(chain.from_iterable(ids_list), np.int64, total)
    offs = np.fromiter(chain.from_iterable(chain.from_iterable(offsets_list)), np.int64, 2 * total).reshape(
        -1, 2
    )
    text_of = np.repeat(np.arange(len(texts)), n_tok)
    base, length = text_start[text_of], text_len[text_of]
    starts = base + np.clip(offs[:, 0], 0, length - 1)
    ends = base + np.clip(np.maximum(offs[:, 1], offs[:, 0] + 1), 1, length)

    cum = np.concatenate([[0], np.cumsum(sup_chars)])
    n_sup = cum[ends] - cum[starts]
    straddle = (n_sup > 0) & (n_sup < ends - starts)
    # Special tokens that must not come from user/answer text; <unk> is a legitimate encoding result.
    lut = np.zeros(max(len(tokenizer), int(ids.max(initial=0)) + 1), dtype=bool)
    lut[sorted(set(tokenizer.all_special_ids) - {image_id, tokenizer.unk_token_id})] = True
    forbidden = lut[ids] & content_chars[starts]
    is_image = ids == image_id
    labels = np.where(sup_chars[starts], ids, IGNORE_INDEX)
    repeats = np.where(is_image, num_image_tokens, 1)
    cuts = np.cumsum(np.bincount(text_of, weights=repeats, minlength=len(texts)).astype(np.int64))[:-1]
    all_ids = np.split(np.repeat(ids, repeats), cuts)
    all_labels = np.split(np.repeat(labels, repeats), cuts)
    n_images = np.bincount(text_of[is_image], minlength=len(texts))
    bad = np.bincount(text_of[straddle | forbidden], minlength=len(texts))
    tok_start = np.cumsum(n_tok) - n_tok
    ignore_prefix = np.full(len(prefix), IGNORE_INDEX, dtype=np.int64)

    results: list[TokenizedConversation | ConversationError] = []
    for k, text in enumerate(texts):
        expected_images = text.count(IMAGE_TOKEN)
        if bad[k] or n_images[k] != expected_images:
            window = slice(tok_start[k], tok_start[k] + n_tok[k])
            results.append(
                _mismatch(
                    text,
                    ids[window],
                    offs[window],
                    straddle[window],
                    forbidden[window],
                    expected_images,
                    int(n_images[k]),
                    tokenizer,
                )
            )
            continue
        input_ids, token_labels = all_ids[k], all_labels[k]
        if len(prefix):
            input_ids = np.concatenate([prefix, input_ids])
            token_labels = np.concatenate([ignore_prefix, token_labels])
        results.append(TokenizedConversation(input_ids, token_labels, expected_images))
    return results


def _mismatch(
    text: str,
    ids: np.ndarray,
    offs: np.ndarray,
    straddle: np.ndarray,
    forbidden: np.ndarray,
    expected_images: int,
    found_images: int,
    tokenizer: PreTrainedTokenizerBase,
) -> TemplateMismatchError:
    if straddle.any():
        i = int(np.flatnonzero(straddle)[0])
        a, b = int(offs[i, 0]), int(offs[i, 1])
        return TemplateMismatchError(
            f"token {i} {tokenizer.convert_ids_to_tokens(int(ids[i]))!r} spans {text[a:b]!r}, across the "
            f"boundary between prompt and answer in {text[max(0, a - 20) : b + 20]!r}"
        )
    if forbidden.any():
        token = tokenizer.convert_ids_to_tokens(int(ids[np.flatnonzero(forbidden)[0]]))
        return TemplateMismatchError(
            f"the conversation text contains the special token {token!r}, which would end or restructure a turn"
        )
    return TemplateMismatchError(
        f"{expected_images} {IMAGE_TOKEN} in the text but {found_images} image-token ids"
    )


TEMPLATES: dict[str, ConversationTemplate] = {
    "plain": ConversationTemplate(
        name="plain",
        system="",
        user_prefix="",
        user_suffix="",
        assistant_prefix="",
        assistant_gap="",
        end_of_turn="\n",
        images_only_user=True,
        single_exchange=True,
    ),
    "vicuna_v1": ConversationTemplate(
        name="vicuna_v1",
        system=VICUNA_SYSTEM + " ",
        user_prefix="USER: ",
        user_suffix=" ",
        assistant_prefix="ASSISTANT:",
        assistant_gap=" ",
        end_of_turn="</s>",
    ),
    "phi": ConversationTemplate(
        name="phi",
        system=VICUNA_SYSTEM + " ",
        user_prefix="USER: ",
        user_suffix=" ",
        assistant_prefix="ASSISTANT:",
        assistant_gap=" ",
        end_of_turn="<|endoftext|>",
    ),
    "chatml": ConversationTemplate(
        name="chatml",
        system=f"<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n",
        user_prefix="<|im_start|>user\n",
        user_suffix="<|im_end|>\n",
        assistant_prefix="<|im_start|>assistant\n",
        assistant_gap="",
        end_of_turn="<|im_end|>\n",
    ),
}


def get_template(name: str) -> ConversationTemplate:
    """The template registered as ``name`` ("plain", "vicuna_v1", "phi", "chatml")."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(
            f"unknown conversation template {name!r}; expected one of {sorted(TEMPLATES)}"
        ) from None

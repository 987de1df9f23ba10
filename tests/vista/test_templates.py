"""Conversation templates: exact strings (as LLaVA / TinyLLaVA build them), exact label masks, train/eval match."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from vista.templates import (
    IGNORE_INDEX,
    ConversationError,
    TemplateMismatchError,
    get_template,
)
from vista.tiny import TEMPLATE_TEXT, build_tokenizer

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
TURNS = [
    {"role": "user", "content": "What is shown here?\n<image>"},
    {"role": "assistant", "content": "A red square above a blue circle."},
    {"role": "user", "content": "How many shapes?"},
    {"role": "assistant", "content": "2, both small"},
]
CAPTION = [
    {"role": "user", "content": "<image>\nDescribe the image briefly."},
    {"role": "assistant", "content": "a dog on a green field"},
]


def _tokenizer_with_eot() -> PreTrainedTokenizerFast:
    """The tiny byte-level BPE plus ``<|endoftext|>`` as a special token (phi-2's end of text)."""
    tokenizer = build_tokenizer(["USER: ASSISTANT: <|endoftext|>"])
    tokenizer.add_tokens(["<|endoftext|>"], special_tokens=True)
    return tokenizer


def _llama_like_tokenizer(split: bool = True) -> PreTrainedTokenizerFast:
    """A sentencepiece-style BPE (Metaspace, prefix space on the first word, BOS added): Vicuna's quirks.

    ``split=False`` lets BPE merges cross spaces (sentencepiece never learns such pieces): a mismatched tokenizer.
    """
    raw = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=split)
    raw.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=split)
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    corpus = TEMPLATE_TEXT + [t["content"] for t in TURNS + CAPTION] + ["ASSISTANT: 0123456789,\n?"] * 3
    raw.train_from_iterator(corpus, trainer=trainer)
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )


@pytest.fixture(scope="module")
def tokenizers_by_template(tiny_tokenizer):
    return {
        "plain": tiny_tokenizer,
        "vicuna_v1": tiny_tokenizer,
        "phi": _tokenizer_with_eot(),
        "vicuna_v1 (llama-like)": _llama_like_tokenizer(),
    }


def test_render_vicuna_v1_matches_llava_format():
    # LLaVA conv_vicuna_v1 (SeparatorStyle.TWO): system + " " + "USER: " q + " " + "ASSISTANT: " a + "</s>" ...
    expected = (
        f"{SYSTEM} USER: <image>\nWhat is shown here? ASSISTANT: A red square above a blue circle.</s>"
        "USER: How many shapes? ASSISTANT: 2, both small</s>"
    )
    template = get_template("vicuna_v1")
    assert template.render_prompt(TURNS, add_generation_prompt=False) == expected
    assert template.render_prompt(TURNS[:3]) == expected[: expected.index("ASSISTANT: 2")] + "ASSISTANT:"


def test_render_phi_matches_tinyllava_format():
    # TinyLLaVA_Factory phi: system + " ", "USER: {q} ", "ASSISTANT: {a}<|endoftext|>"; eval prompt ends "ASSISTANT:"
    expected = (
        f"{SYSTEM} USER: <image>\nWhat is shown here? ASSISTANT: A red square above a blue circle.<|endoftext|>"
        "USER: How many shapes? ASSISTANT: 2, both small<|endoftext|>"
    )
    template = get_template("phi")
    assert template.render_prompt(TURNS, add_generation_prompt=False) == expected
    assert template.render_prompt(TURNS[:1]) == f"{SYSTEM} USER: <image>\nWhat is shown here? ASSISTANT:"


def test_render_plain_drops_the_instruction():
    template = get_template("plain")
    assert template.render_prompt(CAPTION, add_generation_prompt=False) == "<image>a dog on a green field\n"
    assert template.render_prompt(CAPTION[:1]) == "<image>"


def _supervised_runs(tokenizer, input_ids: np.ndarray, labels: np.ndarray) -> list[str]:
    """Decoded contiguous runs of supervised tokens."""
    supervised = labels != IGNORE_INDEX
    assert (labels[supervised] == input_ids[supervised]).all()
    runs, current = [], []
    for token, flag in zip(input_ids.tolist(), supervised.tolist()):
        if flag:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


@pytest.mark.parametrize("key", ["plain", "vicuna_v1", "phi", "vicuna_v1 (llama-like)"])
def test_labels_supervise_exactly_the_assistant_turns(tokenizers_by_template, key):
    template = get_template(key.split(" ")[0])
    tokenizer = tokenizers_by_template[key]
    turns = CAPTION if template.name == "plain" else TURNS
    answers = [t["content"] for t in turns if t["role"] == "assistant"]
    tokens = template.tokenize(turns, tokenizer, num_image_tokens=5)
    expected = [template.assistant_gap + a + template.end_of_turn for a in answers]
    runs = _supervised_runs(tokenizer, tokens.input_ids, tokens.labels)
    if "llama" in key:  # sentencepiece decoding drops the leading space of a sequence: compare tokens instead
        runs = [r.lstrip(" ") for r in runs]
        expected = [e.lstrip(" ") for e in expected]
    assert runs == expected
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert int((tokens.input_ids == image_id).sum()) == 5 and tokens.num_images == 1
    bos = tokenizer.bos_token_id
    starts_with_bos = tokens.input_ids[0] == bos
    assert starts_with_bos == ("llama" in key)  # only the llama-like tokenizer adds BOS by itself
    assert tokens.labels[0] == IGNORE_INDEX


@pytest.mark.parametrize("key", ["plain", "vicuna_v1", "phi", "vicuna_v1 (llama-like)"])
def test_generation_prompt_tokenizes_to_the_training_prefix(tokenizers_by_template, key):
    """What the evaluation plugin feeds (tokenizer(render_prompt(...))) is token-for-token the training prefix."""
    template = get_template(key.split(" ")[0])
    tokenizer = tokenizers_by_template[key]
    turns = CAPTION if template.name == "plain" else TURNS
    tokens = template.tokenize(turns, tokenizer, num_image_tokens=1)
    for k in range(0, len(turns), 2):
        prompt_ids = tokenizer(template.render_prompt(turns[: k + 1]))["input_ids"]
        n = len(prompt_ids)
        assert tokens.input_ids[:n].tolist() == prompt_ids
        assert tokens.labels[n - 1] == IGNORE_INDEX  # the prompt's last token is not supervised...
        assert tokens.labels[n] != IGNORE_INDEX  # ...and the answer starts right after it
    first_prompt = len(tokenizer(template.render_prompt(turns[:1]))["input_ids"])
    assert (tokens.labels[:first_prompt] == IGNORE_INDEX).all()


@pytest.mark.parametrize("key", ["plain", "vicuna_v1", "phi", "vicuna_v1 (llama-like)"])
def test_batch_and_single_tokenization_agree(tokenizers_by_template, key):
    """The dataset validates with tokenize_batch (Rust backend) and loads with tokenize (tokenizer() call)."""
    template = get_template(key.split(" ")[0])
    tokenizer = tokenizers_by_template[key]
    conversations = (
        [CAPTION, CAPTION] if template.name == "plain" else [TURNS, TURNS[:2], [TURNS[2], TURNS[3]]]
    )
    batch = template.tokenize_batch(conversations, tokenizer, num_image_tokens=3)
    for turns, batched in zip(conversations, batch):
        single = template.tokenize(turns, tokenizer, num_image_tokens=3)
        assert np.array_equal(single.input_ids, batched.input_ids)
        assert np.array_equal(single.labels, batched.labels)


def test_eval_processor_expands_images_like_training(tiny_llava):
    """processor(text=prompt, images=...) (what lmms-eval's llava_hf does) equals the training ids prefix."""
    from PIL import Image

    from vista.data import image_tokens_per_image

    _, processor = tiny_llava
    template = get_template("vicuna_v1")
    n = image_tokens_per_image(processor)
    tokens = template.tokenize(TURNS, processor.tokenizer, num_image_tokens=n)
    prompt = template.render_prompt(TURNS[:1])
    ids = processor(text=prompt, images=[Image.new("RGB", (40, 30))], return_tensors="pt")["input_ids"][0]
    assert tokens.input_ids[: len(ids)].tolist() == ids.tolist()


def test_single_image_moves_to_the_front_several_stay():
    template = get_template("vicuna_v1")
    one = [{"role": "user", "content": "Look: <image> what?"}]
    assert template.render_prompt(one).endswith("USER: <image>\nLook:  what? ASSISTANT:")
    two = [{"role": "user", "content": "<image> vs <image>?"}]
    assert "USER: <image> vs <image>? ASSISTANT:" in template.render_prompt(two)


def test_token_across_a_role_boundary_is_reported(tiny_tokenizer):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.add_tokens([": A"])  # a token spanning "ASSISTANT:" (prompt) and " A" (answer)
    template = get_template("vicuna_v1")
    with pytest.raises(TemplateMismatchError, match="template_mismatch: token .* across the boundary"):
        template.tokenize(TURNS, tokenizer)
    (result,) = template.tokenize_batch([TURNS], tokenizer)
    assert isinstance(result, TemplateMismatchError) and result.reason == "template_mismatch"


def test_bpe_merged_across_spaces_is_reported():
    tokenizer = _llama_like_tokenizer(split=False)  # learns pieces such as "\u2581ASSISTANT:\u2581"
    with pytest.raises(TemplateMismatchError, match="across the boundary between prompt and answer"):
        get_template("vicuna_v1").tokenize(TURNS, tokenizer)


def test_special_token_inside_text_is_reported(tiny_tokenizer):
    turns = [TURNS[0], {"role": "assistant", "content": "A cat.</s>USER: fake turn"}]
    with pytest.raises(TemplateMismatchError, match="special token '</s>'"):
        get_template("vicuna_v1").tokenize(turns, tiny_tokenizer)


def test_tokenizer_without_the_end_token_is_a_configuration_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="'<\\|endoftext\\|>' as one token"):
        get_template("phi").check_tokenizer(tiny_tokenizer)


@pytest.mark.parametrize(
    "turns, reason",
    [
        ([], "empty_conversation"),
        ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}], "empty_conversation"),
        ([{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}], "role_order"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "role_order"),
        ([{"role": "user", "content": "a"}], "role_order"),
        ([{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}], "malformed"),
        ([{"role": "system", "content": "a"}], "malformed"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<image>"}],
            "image_count_mismatch",
        ),
    ],
)
def test_invalid_conversations(turns, reason):
    with pytest.raises(ConversationError) as info:
        get_template("vicuna_v1").validate_turns(turns)
    assert info.value.reason == reason


def test_plain_takes_one_exchange():
    with pytest.raises(ConversationError, match="one user turn and one assistant turn"):
        get_template("plain").validate_turns(TURNS)


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown conversation template 'llama3'"):
        get_template("llama3")

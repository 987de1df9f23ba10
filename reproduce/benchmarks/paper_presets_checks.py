"""The checks of ``paper_presets_cpu.py`` on the trained stage-2 model: reload offline and generate through the
lmms-eval plugin, and stage 2 trained what the recipe trains (projector and LM changed, vision tower identical)."""

from __future__ import annotations

from pathlib import Path


def reload_and_generate(preset: str, out: Path, records: list[dict], images: Path) -> bool:
    """Reload offline with the Auto classes, check the architecture, generate for 2 documents via lmms-eval."""
    import torch
    from lmms_eval.api.instance import Instance
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vista.images import load_image
    from vista.lmms_plugin import VistaLlava
    from vista.presets import preset_defaults

    print(
        "\n== reload (AutoModelForImageTextToText / AutoProcessor, offline) and generate (lmms-eval plugin)"
    )
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    text, vision = model.config.text_config, model.config.vision_config
    expected_tokens = 576 if preset == "llava-1.5-7b" else 729
    photo = load_image(images / records[0]["image"])
    inputs = processor(text="<image>\nWhat is this?", images=[photo], return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    with torch.no_grad():
        features = model.get_image_features(pixel_values=inputs["pixel_values"])
    features = getattr(features, "pooler_output", features)  # transformers v5: an output object
    while isinstance(features, (list, tuple)):  # one entry per image
        features = features[0]
    feature_rows = int(features.shape[-2])
    print(
        f"  {type(model).__name__}: LM {text.model_type} hidden {text.hidden_size} x {text.num_hidden_layers} layers, "
        f"vocab {text.vocab_size}; vision {vision.model_type} hidden {vision.hidden_size} x {vision.num_hidden_layers} "
        f"layers at {vision.image_size} px; {image_tokens} image tokens in the prompt, {feature_rows} projected features"
    )
    defaults = preset_defaults(preset, "finetune")["model"]
    checks = {
        "image tokens": image_tokens == feature_rows == expected_tokens,
        "select strategy": model.config.vision_feature_select_strategy == defaults["select_strategy"],
        "feature layer": model.config.vision_feature_layer == defaults["feature_layer"],
    }
    del model
    lm = VistaLlava(pretrained=str(out), dtype="float32", max_new_tokens=8)
    docs = [
        {
            "image": load_image(images / r["image"]),
            "question": r["conversations"][0]["value"].replace("<image>", "").strip(),
        }
        for r in records[:2]
    ]
    lm.task_dict = {"t": {"test": docs}}
    requests = [
        Instance(
            "generate_until",
            (
                d["question"],
                {"max_new_tokens": 8, "until": ["\n"]},
                lambda doc: [doc["image"]],
                i,
                "t",
                "test",
            ),
            0,
            {"task": "t", "doc_id": i, "repeats": 1},
        )
        for i, d in enumerate(docs)
    ]
    answers = lm.generate_until(requests)
    for doc, answer in zip(docs, answers):
        print(f"  Q: {doc['question'][:60]!r} -> A (random weights): {answer!r}")
    checks["generated 2"] = len(answers) == 2 and all(isinstance(a, str) for a in answers)
    print("  checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in checks.items()))
    return all(checks.values())


def trained_as_recipe(stage1: Path, stage2: Path) -> bool:
    """Stage 2 changed every projector and LM tensor and left the vision tower bit-identical (models as reloaded:
    the two saves lay out their keys differently on disk, ZeRO-3's gathered save and a plain one)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vista.builder import part_of

    def weights(folder: Path) -> dict:
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.bfloat16)
        return {k: v.detach() for k, v in model.state_dict().items()}

    before, after = weights(stage1), weights(stage2)
    changed = {part: [] for part in ("vision_tower", "projector", "language_model")}
    unchanged_lm = []
    for name, tensor in after.items():
        changed[part_of(name)].append(not torch.equal(tensor, before[name]))
        if part_of(name) == "language_model" and not changed["language_model"][-1]:
            unchanged_lm.append(name)
    summary = ", ".join(f"{part} {sum(flags)}/{len(flags)}" for part, flags in changed.items())
    print(f"  stage 2 vs stage 1, tensors changed: {summary}; LM unchanged: {unchanged_lm}")
    # Norm scales start at 1.0, where bf16's spacing (2^-7) hides an AdamW step of lr 2e-5: matrices must change.
    matrices = [after[n].dim() > 1 for n in unchanged_lm]
    return (
        set(after) == set(before)
        and not any(changed["vision_tower"])
        and all(changed["projector"])
        and not any(matrices)
    )

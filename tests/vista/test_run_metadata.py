"""vista/run_metadata.py: the vista_run.json schema, its provenance record and the typed accessors (old files too)."""

from __future__ import annotations

import json

import pytest

from vista.run_metadata import (
    RUN_FILE,
    format_run_name,
    parse_run_name,
    provenance,
    read_run_metadata,
    recorded_git_commit,
    recorded_image_aspect,
    recorded_max_length,
    recorded_package_version,
    recorded_template,
    write_run_file,
)

CURRENT = {  # the layout vista train writes
    "template": "vicuna_v1",
    "git": {"commit": "abc123", "dirty": False},
    "packages": {"transformers": "5.0.0", "vista-mllm": "0.1", "python": "3.11.7"},
    "config": {"data": {"template": "vicuna_v1", "image_aspect": "resize", "max_length": 512}},
}


def test_accessors_read_the_current_layout(tmp_path):
    path = write_run_file(tmp_path / "run", CURRENT)
    assert path == tmp_path / "run" / RUN_FILE
    meta, found = read_run_metadata(tmp_path / "run" / "checkpoint-3")  # the parent folder is searched too
    assert found == path
    assert recorded_template(meta) == "vicuna_v1"
    assert recorded_image_aspect(meta) == "resize"
    assert recorded_max_length(meta) == 512
    assert recorded_git_commit(meta) == "abc123"
    assert recorded_package_version(meta, "vista_mllm") == "0.1"  # names compared as PEP 503 normalised


def test_accessors_read_older_and_hand_written_files():
    # vista_eval.json as written before provenance()
    old_eval = {"versions": {"lmms_eval": "0.7.3", "git_commit": "def456"}}
    assert recorded_package_version(old_eval, "lmms-eval") == "0.7.3"
    assert recorded_git_commit(old_eval) == "def456"
    assert recorded_template({"conversation_template": "phi"}) == "phi"
    assert recorded_template({"config": {"data": {"template": "plain"}}}) == "plain"
    assert recorded_image_aspect({"image_aspect_ratio": "pad"}) == "pad"  # LLaVA's key
    assert recorded_max_length({"config": {"data": {"max_length": True}}}) is None  # not a length
    # A "template" key elsewhere is not the conversation template (the old nested-key search took it).
    assert recorded_template({"lora": {"template": "x"}}) is None
    assert recorded_package_version({}, "torch") is None and recorded_git_commit({}) is None


def test_provenance_records_git_and_requested_packages():
    record = provenance(("torch", "surely-not-installed-pkg"))
    assert set(record) == {"git", "packages"} and set(record["git"]) == {"commit", "dirty"}
    assert record["packages"]["torch"] and record["packages"]["surely-not-installed-pkg"] is None
    assert record["packages"]["python"].count(".") == 2
    json.dumps(record)  # JSON-serialisable as written


def test_run_name_round_trip():
    name = format_run_name("tiny", "vista-cosine", 3)
    assert name == "tiny__vista-cosine__seed3"
    assert parse_run_name(name) == {"family": "tiny", "variant": "vista-cosine", "seed": 3}
    with pytest.raises(ValueError, match="cannot be part of a run name"):
        format_run_name("a__b", "vista", 0)


def test_a_checkpoint_of_any_hf_family_resolves_to_its_own_chat_template(tmp_path):
    """Eval, probe and MI read ``chat_template`` as "the processor's own chat template" (issue 15 items 4-5)."""
    from vista.run_metadata import CHAT_TEMPLATE, TemplateMismatchWarning, resolve_template_name

    (tmp_path / "vista_run.json").write_text(json.dumps({"template": CHAT_TEMPLATE}))
    assert resolve_template_name(tmp_path) == CHAT_TEMPLATE
    with pytest.warns(TemplateMismatchWarning, match="'vicuna_v1' given explicitly contradicts"):
        assert resolve_template_name(tmp_path, "vicuna_v1") == "vicuna_v1"

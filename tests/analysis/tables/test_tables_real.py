"""analysis.tables on other people's real lmms-eval files (``shared/realdata/``) and on the value kinds they
contain: unusable scores, partial (--limit) runs, fewer seeds, run identity from the sidecar, labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis import tables as T
from analysis.tables.cli import parse_labels
from vista.run_metadata import format_run_name, parse_run_name


def write(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")  # json.dumps writes NaN / Infinity as lmms-eval does
    return path


def results(metrics: dict, documents: tuple[int, int] | None = None, model_name: str = "m") -> dict:
    doc = {
        "results": metrics,
        "model_name": model_name,
        "config": {"model": "vista"},
        "date": "20260101_120000",
    }
    if documents:
        doc["n-samples"] = {t: {"effective": documents[0], "original": documents[1]} for t in metrics}
    return doc


# ---- other people's files ---------------------------------------------------------------------------------------
# file prefix -> (readable row label, {paper column: value in paper units}) for the files with mapped tasks
EXPECTED = {
    "BENchmarking__": ("Qwen2.5-VL-7B-Instruct", {"MMB-en": 83.76288659793815, "MME-P": 1688.734993997599}),
    "lmms-eval-jetson-branch__20260925": ("Qwen2.5-VL-3B-Instruct-AWQ", {"GQA": 59.4450628080776}),
    "swiss-ai-MLLM-eval-suite__20260722": ("Molmo-7B-D-0924", {"MMStar": 30.879171168419445}),
    "swiss-ai-MLLM-eval-suite__20260724": ("gemma4_hf", {"VQA-v2": 0.0}),
}


def test_every_real_results_file_loads_through_vista_tables(realdata, tmp_path, capsys):
    from vista.cli import main

    files = sorted((realdata / "lmms_results").glob("*.json"))
    assert len(files) == 13
    shruum = "shruum-lmms-eval__20260218_234435_results.json"
    argv = [
        "tables",
        "--results",
        *map(str, files),
        "--out",
        str(tmp_path),
        "--label",
        f"{shruum}=LLaVA-1.5-7B (shruum)",
    ]
    assert main(argv) == 0
    long = pd.read_csv(tmp_path / "runs" / "results_long.csv")
    assert set(long["file"]) == {str(f) for f in files}  # every file read
    assert not long["family"].str.contains("/|unknown").any()  # readable names, no paths
    assert "LLaVA-1.5-7B (shruum)" in set(long["family"])  # --label
    wide = pd.read_csv(tmp_path / "runs" / "paper_columns.csv")
    for prefix, (label, values) in EXPECTED.items():
        assert set(long.loc[long["file"].str.contains(prefix), "family"]) == {label}
        row = wide[wide["family"] == label].iloc[0]
        for column, value in values.items():
            assert row[column] == pytest.approx(value)
    warned = (tmp_path / "warnings.txt").read_text().splitlines()
    unmapped = [w for w in warned if w.startswith("tasks not in the benchmark map")]
    assert len(unmapped) == 1 and "mmbench_en_test (1 run)" in unmapped[0] and "cvqa (1 run)" in unmapped[0]
    summary = (tmp_path / "tables.md").read_text()
    assert "| Qwen2.5-VL-7B-Instruct |" in summary and "-unknown" not in summary
    streams = capsys.readouterr()
    assert "warning: tasks not in the benchmark map" in streams.err  # warnings on stderr, tables on stdout
    assert "warning:" not in streams.out and "| Qwen2.5-VL-7B-Instruct |" in streams.out


def test_a_label_matching_no_results_file_is_an_error(realdata, tmp_path, capsys):
    from vista.cli import main

    argv = ["tables", "--results", str(realdata / "lmms_results"), "--out", str(tmp_path)]
    assert main([*argv, "--label", "nosuchfile*.json=Mine"]) == 2
    assert "--label nosuchfile*.json: matches none of the" in capsys.readouterr().err


def test_real_null_and_empty_scores_are_gaps_with_warnings(realdata):
    bench = realdata / "lmms_results" / "BENchmarking__20250225_020221_results.json"
    long = T.load_lmms_results([bench])
    test_split = long[(long.task == "mmbench_en_test") & (long.metric_key == "gpt_eval_score,none")]
    assert test_split["value"].isna().all() and test_split["note"].iloc[0] == "not a number: []"
    mapping = [T.Benchmark("MMB-test", "general", "mmbench_en_test", ("gpt_eval_score,none",)),
               T.Benchmark("MMB-sub", "general", "mmbench_en_dev", ("submission,none",))]  # fmt: skip
    with pytest.warns(T.MissingBenchmarkWarning) as caught:
        wide = T.to_paper_columns(long, mapping)
    messages = " ".join(str(w.message) for w in caught)
    assert f"{bench}: results['mmbench_en_test']['gpt_eval_score,none'] is not a number: []" in messages
    assert f"{bench}: results['mmbench_en_dev']['submission,none'] is null" in messages
    assert wide[["MMB-test", "MMB-sub"]].isna().all().all()


# ---- the value kinds ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "why"),
    [(None, "is null"), ([], r"is not a number: \[\]"), ("N/A", 'is not a number: "N/A"'),
     (float("nan"), "is not finite: nan"), (float("inf"), "is not finite: inf"), (True, "is not a number: true")],
)  # fmt: skip
def test_every_unusable_score_is_a_gap_naming_file_task_and_key(value, why, tmp_path):
    path = write(tmp_path / "tiny__vista__seed0" / "x_results.json",
                 results({"gqa": {"exact_match,none": value}, "textvqa_val": {"exact_match,none": 0.5}}))  # fmt: skip
    with pytest.warns(
        T.MissingBenchmarkWarning, match=rf"{path}: results\['gqa'\]\['exact_match,none'\] {why}"
    ):
        wide = T.to_paper_columns(T.load_lmms_results(tmp_path))
    assert math.isnan(wide["GQA"].iloc[0]) and wide["TextVQA"].iloc[0] == 50.0


def test_limit_runs_are_marked_and_complete_runs_preferred(tmp_path):
    run = tmp_path / "tiny__vista__seed0"
    write(run / "a_results.json", results({"gqa": {"exact_match,none": 0.6}}, documents=(100, 100)))
    write(run / "b_results.json", results({"gqa": {"exact_match,none": 1.0}}, documents=(1, 100)))  # later
    write(run / "c_results.json", results({"textvqa_val": {"exact_match,none": 0.4}}, documents=(10, 50)))
    with pytest.warns(T.MissingBenchmarkWarning, match=r"TextVQA \(10/50 documents\): evaluated on part"):
        wide = T.to_paper_columns(T.load_lmms_results(tmp_path))
    assert wide["GQA"].iloc[0] == 60.0  # the complete run, not the later 1-document one
    table = T.build_tables(wide)["semantic"]
    assert "| tiny-VISTA | — | — | 60.00 | 40.00‡ |" in table.to_markdown()
    assert "‡: evaluated on part of the benchmark" in table.to_markdown()
    old = results({"gqa": {"exact_match,none": 0.7}})  # an older layout without n-samples, but config.limit
    old["config"]["limit"] = 20
    write(tmp_path / "tiny__baseline__seed0" / "x_results.json", old)
    with pytest.warns(T.MissingBenchmarkWarning, match=r"run tiny/baseline/0: GQA \(--limit 20 documents\)"):
        T.to_paper_columns(T.load_lmms_results(tmp_path))


def test_cells_from_fewer_seeds_say_so(tmp_path):
    for seed, gqa in enumerate([0.5, 0.6, None]):
        metrics = {"textvqa_val": {"exact_match,none": 0.4}}
        metrics |= {"gqa": {"exact_match,none": gqa}} if gqa is not None else {}
        write(tmp_path / format_run_name("tiny", "vista", seed) / "m" / "x_results.json", results(metrics))
    with pytest.warns(T.MissingBenchmarkWarning):
        wide = T.to_paper_columns(T.load_lmms_results(tmp_path))
    markdown = T.build_tables(wide)["semantic"].to_markdown()
    assert "| 55.00±7.07 (n=2) | 40.00±0.00 |" in markdown
    assert "(n=k): from k seeds, fewer than the table's other cells (3)" in markdown


# ---- run identity -----------------------------------------------------------------------------------------------
def test_the_eval_sidecar_wins_over_lmms_evals_model_subfolder(tmp_path):
    """``vista eval --checkpoint /ckpts/llava-1.5-7b__vista__seed1 --out results/eval_vista``: lmms-eval writes
    into ``ckpts__llava-1.5-7b__vista__seed1/`` below the folder holding vista_eval.json."""
    out = tmp_path / "results" / "eval_vista"
    write(out / "vista_eval.json", {"family": "llava-1.5-7b", "variant": "vista", "seed": 1})
    write(out / "ckpts__llava-1.5-7b__vista__seed1" / "20260101_results.json",
          results({"gqa": {"exact_match,none": 0.6}}))  # fmt: skip
    long = T.load_lmms_results(tmp_path / "results")
    assert set(zip(long.family, long.variant, long.seed)) == {("llava-1.5-7b", "vista", 1)}


def test_one_run_name_format_and_parser():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "reproduce"))
    from pipeline import run_name

    name = run_name({"family": "llava-1.5-7b"}, "vista-cosine", 2)
    assert name == format_run_name("llava-1.5-7b", "vista-cosine", 2) == "llava-1.5-7b__vista-cosine__seed2"
    assert parse_run_name(name) == {"family": "llava-1.5-7b", "variant": "vista-cosine", "seed": 2}
    assert parse_run_name("ckpts__llava-1.5-7b__vista__seed1") is None  # lmms-eval's model folder
    with pytest.raises(ValueError, match="cannot be part of a run name"):
        format_run_name("a__b", "vista", 0)


def test_label_option_names_family_variant_and_seed(tmp_path):
    path = write(
        tmp_path / "r" / "x_results.json", results({"gqa": {"exact_match,none": 0.6}}, model_name="")
    )
    long = T.load_lmms_results(tmp_path, labels={"x_results.json": "llava-1.5-7b/baseline/4"})
    assert set(zip(long.family, long.variant, long.seed)) == {("llava-1.5-7b", "baseline", 4)}
    with pytest.raises(T.ResultsFormatError, match="is not 'name"):
        T.load_lmms_results(tmp_path, labels={str(path): "a/b/c/d"})
    assert parse_labels(["a=b=c"]) == {"a=b": "c"}
    with pytest.raises(T.ResultsFormatError, match="expected FILE=NAME"):
        parse_labels(["nolabel"])


# ---- sample logs and submissions --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "fmt", "rows", "metric", "results_file"),
    [
        ("shruum-lmms-eval__20260218_234435_samples_scienceqa_img.jsonl", "compact", 2017, "exact_match",
         "shruum-lmms-eval__20260218_234435_results.json"),
        ("NipElement-lmms-eval__20250322_005943_samples_olympiadbench_test_en_oe.jsonl", "full", 1, "exact_match",
         "NipElement-lmms-eval__20250322_005943_results.json"),
        ("BENchmarking__20250225_020221_samples_mme.jsonl", "full", 2374, "mme_perception_score", None),
        ("ipheiman-lmms-eval-hm__20250811_105612_samples_dota.jsonl", "compact", 4, "dota_IoU", None),
    ],
)  # fmt: skip
def test_real_sample_logs_load_in_both_formats(name, fmt, rows, metric, results_file, realdata):
    samples = T.load_lmms_samples(realdata / "lmms_samples" / name)
    assert samples.attrs["format"] == fmt and len(samples) == rows and samples["doc_id"].is_unique
    assert metric in samples.columns and samples["response"].str.len().gt(0).all()
    if results_file:  # the per-sample mean is the aggregated score lmms-eval wrote
        doc = json.loads((realdata / "lmms_results" / results_file).read_text())
        task = samples["task"].iloc[0]
        assert samples[metric].mean() == pytest.approx(doc["results"][task][f"{metric},none"], abs=1e-12)


def test_sample_log_with_a_broken_line_names_file_and_line(tmp_path):
    path = tmp_path / "20260101_samples_gqa.jsonl"
    path.write_text(
        '{"doc_id": 0, "target": "a", "filtered_resps": ["a"], "exact_match": 1.0}\n{"doc_id": 1,\n'
    )
    with pytest.raises(T.ResultsFormatError, match=rf"{path}: line 2: not valid JSON"):
        T.load_lmms_samples(path)


def test_submission_files_beside_results_are_skipped_with_a_warning(realdata, tmp_path):
    out = tmp_path / "eval" / "tiny__vista__seed0"
    write(out / "m" / "20260101_120000_results.json", results({"gqa": {"exact_match,none": 0.6}}))
    submission = realdata / "lmms_submissions" / "BENchmarking__mmbench_en_dev_results.json"
    (out / "submissions").mkdir()
    (out / "submissions" / "mmbench_en_dev_results.json").symlink_to(submission)  # as lmms-eval lays them out
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) in lmms-eval's submissions/ folders"):
        long = T.load_lmms_results(tmp_path / "eval")
    assert set(long["task"]) == {"gqa"}


def test_vista_eval_takes_the_identity_from_a_run_named_checkpoint_path(tmp_path):
    from vista.evaluation import run_identity

    checkpoint = tmp_path / "ckpts" / "llava-1.5-7b__vista__seed1"
    checkpoint.mkdir(parents=True)
    assert run_identity(checkpoint) == {"family": "llava-1.5-7b", "variant": "vista", "seed": 1}
    assert run_identity(checkpoint / "finetune", variant="vista-cosine")["variant"] == "vista-cosine"


def test_unreadable_benchmark_map_names_the_file(tmp_path):
    path = tmp_path / "map.csv"
    path.write_bytes('column,table,task,metric_keys,scale\nMMB-é,general,mmb,"a,none",1\n'.encode("latin-1"))
    with pytest.raises(T.ResultsFormatError, match=rf"{path}: not a readable UTF-8 CSV file"):
        T.load_benchmark_map(path)

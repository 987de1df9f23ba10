"""analysis.tables: loading lmms-eval results (0.3.x and 0.7.x layouts), paper columns, tables, audit, errors.

The result files are built here with the structure lmms-eval writes. 0.7.x: from the installed 0.7.3 source
(evaluator.simple_evaluate + loggers/evaluation_tracker.py) and checked against a file written by a real 0.7.3 run
(the end-to-end test in tests/vista/test_lmms_plugin.py parses one). 0.3.x: the same lm-eval-harness-derived
layout without the later additions (no ``lmms_eval_version``, ``git_branch``, ``usage``, ``config.model_backend``,
no CLT/clustered stderrs), with the v0.3.0 quirks of REFERENCE section 4 (the ``mme_percetion_score`` typo, MMT's
dict-valued ``accuracy``, RealWorldQA's ``flexible-extract`` filter); the v0.3.0 source itself was not available.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest

from analysis import tables as T

# REFERENCE.md section 3, verbatim.
PAPER_MARKDOWN = """
| TinyLLaVA-3B | 79.13 | 57.50 | 61.20 | 51.66 | 53.33 | 28.03 | - |
| TinyLLaVA-VISTA(cosine) | 79.10 | 58.30 | 61.67 | 51.89 | 53.59 | 28.58 | 0.98 |
| TinyLLaVA-VISTA | 79.20 | 57.67 | 61.79 | 51.89 | 55.42 | 28.79 | 1.33 |
| LLaVA-1.5-7B | 78.50 | 53.44 | 62.00 | 46.07 | 55.82 | 21.49 | - |
| LLaVA-VISTA(cosine) | 78.98 | 56.30 | 62.90 | 46.77 | 56.34 | 21.87 | 1.94 |
| LLaVA-VISTA | 79.06 | 56.25 | 62.55 | 46.63 | 57.39 | 22.66 | 2.72 |

| TinyLLaVA-3B | 69.01 | 60.36 | 36.33 | 37.19 | 48.73 | 337 | 67.04 | 42.37 | - |
| TinyLLaVA-VISTA(cosine) | 68.88 | 59.55 | 36.89 | 37.65 | 48.77 | 334 | 68.10 | 42.60 | 0.22 |
| TinyLLaVA-VISTA | 69.37 | 59.84 | 37.89 | 39.91 | 48.86 | 338 | 66.53 | 43.89 | 1.82 |
| LLaVA-1.5-7B | 66.17 | 54.80 | 36.44 | 33.48 | 48.86 | 313 | 64.30 | 58.30 | - |
| LLaVA-VISTA(cosine) | 66.43 | 56.28 | 35.88 | 35.91 | 48.06 | 315 | 66.08 | 57.85 | 1.27 |
| LLaVA-VISTA | 66.68 | 56.70 | 37.22 | 35.88 | 48.86 | 321 | 65.36 | 57.29 | 1.97 |

| TinyLLaVA-3B | 1457.09 | 329.64 | 28.67 | 28.39 | 59.54 | - |
| TinyLLaVA-VISTA(cosine) | 1507.09 | 358.92 | 29.96 | 29.21 | 58.21 | 2.55 |
| TinyLLaVA-VISTA | 1517.72 | 335.35 | 28.15 | 28.31 | 62.94 | 3.03 |
| LLaVA-1.5-7B | 1510.72 | 348.20 | 29.76 | 28.92 | 57.76 | - |
| LLaVA-VISTA(cosine) | 1514.16 | 361.07 | 31.81 | 31.24 | 56.37 | 1.74 |
| LLaVA-VISTA | 1506.70 | 377.85 | 32.17 | 31.54 | 57.47 | 2.74 |
"""
PAPER_COLUMNS = {
    "semantic": ["VQA-v2", "OK-VQA", "GQA", "TextVQA", "RealWorldQA", "DocVQA"],
    "general": ["SEEDB-I", "AI2D", "MMMU", "MMStar", "MMTB", "OCRB", "MMB-en", "MMB-cn"],
    "fine_grained": ["MME-P", "MME-C", "RefCOCO", "RefCOCO+", "RefCOCOg"],
}


def _rows(markdown: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("| ")
    ]


# ------------------------------------------------------------------ builders of lmms-eval results files


def _task_block(task: str, metrics: dict, legacy: bool) -> dict:
    """One ``results[task]`` entry; 0.7.3 adds CLT and clustered stderrs (seen in a real 0.7.3 file)."""
    block = {"alias": task}
    for key, value in metrics.items():
        metric, _, filt = key.partition(",")
        block[key] = value
        block[f"{metric}_stderr,{filt}"] = "N/A" if isinstance(value, dict) else 0.01
        if not legacy:
            block[f"{metric}_stderr_clt,{filt}"] = 0.01
            block[f"{metric}_stderr_clustered,{filt}"] = "N/A"
    return block


def _task_config(task: str) -> dict:
    return {"task": task, "dataset_path": f"lmms-lab/{task}", "test_split": "test", "output_type": "generate_until",
            "repeats": 1, "should_decontaminate": False, "metadata": [{"version": 0.0}]}  # fmt: skip


def results_v07(metrics: dict[str, dict], model_name: str = "/ckpt/run", legacy: bool = False) -> dict:
    """Structure of lmms-eval 0.7.3 evaluator.simple_evaluate + EvaluationTracker.save_results_aggregated."""
    tasks = sorted(metrics)
    return {
        "results": {t: _task_block(t, m, legacy) for t, m in metrics.items()},
        "group_subtasks": {t: [] for t in reversed(tasks)},
        "configs": {t: _task_config(t) for t in tasks},
        "versions": {t: "Yaml" for t in tasks},
        "n-shot": {t: 0 for t in tasks},
        "higher_is_better": {t: {k.split(",")[0]: True for k in metrics[t]} for t in tasks},
        "n-samples": {t: {"original": 10, "effective": 10} for t in tasks},
        "config": {
            "model": "vista",
            "model_args": f"pretrained={model_name}",
            "model_backend": "vista.lmms_plugin.VistaLlava (simple)",
            "batch_size": "1",
            "batch_sizes": [],
            "device": "cpu",
            "use_cache": None,
            "limit": None,
            "offset": 0,
            "bootstrap_iters": 0,
            "process_docs_parallel": False,
            "gen_kwargs": "",
            "random_seed": 0,
            "numpy_seed": 1234,
            "torch_seed": 1234,
            "fewshot_seed": 1234,
        },  # fmt: skip
        "git_hash": None,
        "git_branch": None,
        "lmms_eval_version": "main@6fbfde2",  # git of the working directory, not lmms-eval's version
        "date": "20260101_120000",
        "usage": {},
        "efficiency": {},
        "task_hashes": {},
        "model_source": "vista",
        "model_name": model_name,
        "model_name_sanitized": model_name.strip("/").replace("/", "__"),
        "system_instruction": None,
        "system_instruction_sha": None,
        "fewshot_as_multiturn": False,
        "chat_template": None,
        "chat_template_sha": None,
        "start_time": 1.0,
        "end_time": 2.0,
        "total_evaluation_time_seconds": "1.0",
    }


def results_v03(metrics: dict[str, dict], model_name: str = "/ckpt/run") -> dict:
    """Structure of lmms-eval v0.3.0 (the paper's version): no lmms_eval_version, no config.model_backend."""
    doc = results_v07(metrics, model_name, legacy=True)
    for key in ("git_branch", "lmms_eval_version", "usage", "efficiency"):
        del doc[key]
    for key in ("model_backend", "offset", "process_docs_parallel"):
        del doc["config"][key]
    doc["date"] = "20241201_093000"
    return doc


def write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


def paper_metrics(values: dict[str, float], legacy: bool = False) -> dict[str, dict]:
    """lmms-eval metric dicts (lmms-eval units) whose paper-unit values are ``values`` (paper column -> value)."""
    out: dict[str, dict] = {}
    for b in T.load_benchmark_map():
        if b.column not in values:
            continue
        raw = values[b.column] / b.scale
        key = b.metric_keys[-1] if legacy and b.column == "MME-P" else b.metric_keys[0]
        if b.column == "MMTB" and legacy:
            raw = {"overall_accuracy": raw, "Fine-grained Perception": 12.5}
        out.setdefault(b.task, {})[key] = raw
    return out


ALL_COLUMNS = [c for cols in PAPER_COLUMNS.values() for c in cols]


# ------------------------------------------------------------------ the paper's own numbers


def test_paper_tables_reproduce_every_printed_cell():
    expected = _rows(PAPER_MARKDOWN)
    tables = T.paper_tables()
    assert list(tables) == ["semantic", "general", "fine_grained"]
    got = []
    for tid, table in tables.items():
        assert table.columns == PAPER_COLUMNS[tid]
        got += _rows(table.to_markdown())[1:]  # drop the header row
    assert got == expected


def test_paper_results_csv_is_reference_section_3():
    frame = pd.read_csv(T.PAPER_RESULTS, dtype=str, keep_default_na=False).set_index("model")
    blocks = [_rows(block) for block in PAPER_MARKDOWN.strip().split("\n\n")]
    for (tid, cols), block in zip(PAPER_COLUMNS.items(), blocks):
        for model, *cells in block:
            avg = frame.at[model, f"avg_{tid}"] or "-"
            assert [frame.at[model, c] for c in cols] + [avg] == cells  # the same strings, digit for digit


def test_audit_reproduces_only_the_llava_semantic_averages():
    audit = T.audit_paper_averages()
    assert len(audit) == 12
    ok = audit[audit.reproduced]
    assert sorted(zip(ok.table, ok.model)) == [
        ("semantic", "LLaVA-VISTA"),
        ("semantic", "LLaVA-VISTA(cosine)"),
    ]
    # hand computation of LLaVA-VISTA, semantic: mean of 100 (x - x0) / x0 over the six benchmarks
    x = [79.06, 56.25, 62.55, 46.63, 57.39, 22.66]
    x0 = [78.50, 53.44, 62.00, 46.07, 55.82, 21.49]
    hand = sum(100 * (a - b) / b for a, b in zip(x, x0)) / 6
    row = audit[(audit.table == "semantic") & (audit.model == "LLaVA-VISTA")].iloc[0]
    assert row.mean_relative_gain == pytest.approx(hand) and round(hand, 2) == 2.72
    tiny_fine = audit[(audit.table == "fine_grained") & (audit.model == "TinyLLaVA-VISTA")].iloc[0]
    assert (
        tiny_fine.printed == 3.03
        and round(tiny_fine.mean_relative_gain, 2) == 1.90
        and not tiny_fine.reproduced
    )
    assert "2 of 12" in T.render_audit_markdown(audit)


# ------------------------------------------------------------------ loading both layouts


def test_load_both_layouts_and_convert_to_paper_units(tmp_path):
    values = {c: 10.0 + i for i, c in enumerate(ALL_COLUMNS)}
    values["OCRB"], values["MME-P"], values["MME-C"] = 337.0, 1457.25, 329.5
    old = write(tmp_path / "llava-1.5-7b__baseline__seed0" / "ckpt__a" / "20241201_093000_results.json",
                results_v03(paper_metrics(values, legacy=True)))  # fmt: skip
    new = write(tmp_path / "llava-1.5-7b__vista__seed0" / "ckpt__b" / "20260101_120000_results.json",
                results_v07(paper_metrics({c: v + 1 for c, v in values.items()})))  # fmt: skip
    long = T.load_lmms_results([tmp_path])
    assert set(long.columns) == set(T.LONG_COLUMNS)
    assert dict(zip(long.file, long.layout)) == {str(old): "0.3.x", str(new): "0.7.x"}
    assert not long.metric_key.str.contains("stderr").any() and "alias" not in set(long.metric_key)
    legacy = long[long.file == str(old)]
    assert "mme_percetion_score,none" in set(legacy.metric_key)
    assert set(legacy[legacy.task == "mmt_val"].subkey) == {"overall_accuracy", "Fine-grained Perception"}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every column present: no gap warning
        wide = T.to_paper_columns(long)
    assert list(wide.columns) == ["family", "variant", "seed", *ALL_COLUMNS]
    base = wide[wide.variant == "baseline"].iloc[0]
    vista = wide[wide.variant == "vista"].iloc[0]
    for col in ALL_COLUMNS:
        assert base[col] == pytest.approx(values[col]) and vista[col] == pytest.approx(values[col] + 1)
    prov = wide.attrs["provenance"]
    assert (
        prov[(prov.column == "MME-P") & prov.run.str.contains("baseline")].metric_key.item()
        == "mme_percetion_score,none"
    )


def test_realworldqa_filter_priority_and_dict_field(tmp_path):
    metrics = {"realworldqa": {"exact_match,flexible-extract": 0.6, "exact_match,none": 0.4},
               "mmt_val": {"accuracy,none": {"overall_accuracy": 48.73, "x": 1.0}}}  # fmt: skip
    write(tmp_path / "f__baseline__seed0" / "m" / "20241201_093000_results.json", results_v03(metrics))
    with pytest.warns(T.MissingBenchmarkWarning):
        wide = T.to_paper_columns(T.load_lmms_results(tmp_path))
    assert wide["RealWorldQA"].item() == pytest.approx(60.0)
    assert wide["MMTB"].item() == pytest.approx(48.73)


# ------------------------------------------------------------------ run identity


def test_run_identity_sidecar_folder_and_fallback(tmp_path):
    metrics = {"gqa": {"exact_match,none": 0.5}}
    write(tmp_path / "a" / "vista_eval.json", {"family": "tiny", "variant": "vista-cosine", "seed": 3,
                                               "versions": {"lmms_eval": "0.7.3"}})  # fmt: skip
    write(tmp_path / "a" / "m__x" / "20260101_120000_results.json", results_v07(metrics))
    write(tmp_path / "b" / "run.json", {"family": "tiny", "variant": "baseline"})
    write(tmp_path / "b" / "20260101_120000_results.json", results_v07(metrics))
    write(tmp_path / "tiny__vista__seed7" / "m" / "20260101_120000_results.json", results_v07(metrics))
    write(tmp_path / "c" / "m" / "20260101_120000_results.json", results_v07(metrics, model_name="/x/orphan"))
    with pytest.warns(UserWarning, match="no vista_eval.json / run.json"):
        long = T.load_lmms_results(tmp_path)
    runs = long.groupby("file")[["family", "variant", "seed", "lmms_eval_version"]].first()
    got = {tuple(r[:3]) for r in runs.itertuples(index=False)}
    assert got == {
        ("tiny", "vista-cosine", 3),
        ("tiny", "baseline", 0),
        ("tiny", "vista", 7),
        ("orphan", "unknown", 0),
    }
    assert "0.7.3" in set(runs.lmms_eval_version)


# ------------------------------------------------------------------ seeds, gaps, averages, deltas


def _seed_runs(tmp_path: Path, family: str, variant: str, gqa: list[float], textvqa: list[float]) -> None:
    for seed, (g, t) in enumerate(zip(gqa, textvqa)):
        metrics = {"gqa": {"exact_match,none": g / 100}, "textvqa_val": {"exact_match,none": t / 100}}
        write(
            tmp_path / f"{family}__{variant}__seed{seed}" / "m" / "20260101_120000_results.json",
            results_v07(metrics),
        )


def test_seeds_mean_std_avg_improvement_and_gaps(tmp_path):
    _seed_runs(tmp_path, "llava-1.5-7b", "baseline", [50, 50], [40, 40])
    _seed_runs(tmp_path, "llava-1.5-7b", "vista", [54, 56, 58], [44, 44, 44])  # gains: +8/+12/+16 % and +10 %
    with pytest.warns(T.MissingBenchmarkWarning, match="no value for VQA-v2"):
        wide = T.to_paper_columns(T.load_lmms_results(tmp_path))
    assert len(wide) == 5 and wide["VQA-v2"].isna().all()  # a gap, never a zero
    tables = T.build_tables(wide)
    sem = tables["semantic"]
    assert sem.labels == ["LLaVA-1.5-7B", "LLaVA-VISTA"]
    cells = dict(zip(["model", *sem.columns, T.AVG], _rows(sem.to_markdown())[2]))
    assert cells["GQA"] == "56.00±2.00" and cells["TextVQA"] == "44.00±0.00" and cells["VQA-v2"] == T.GAP
    # per seed: mean(8, 10) = 9, mean(12, 10) = 11, mean(16, 10) = 13 -> 11 ± 2, over 2 of 6 benchmarks
    assert cells[T.AVG] == "11.00±2.00*"
    assert sem.mean.at["LLaVA-VISTA", T.AVG] == pytest.approx(11.0)
    assert "*: averaged over the benchmarks present" in sem.to_markdown()
    assert r"56.00$\pm$2.00" in sem.to_latex()
    csv = pd.read_csv(io.StringIO(sem.to_csv()))
    assert csv.loc[1, "GQA n"] == 3 and math.isnan(csv.loc[1, "VQA-v2"])

    deltas = T.delta_tables(tables)
    drow = dict(
        zip(["model", *deltas["semantic"].columns, T.AVG], _rows(deltas["semantic"].to_markdown())[2])
    )
    assert drow["GQA"] == "-6.55" and drow["TextVQA"] == "-2.63"  # 56 - 62.55, 44 - 46.63
    gains = T.relative_gains(wide)
    assert gains.set_index("column").at["GQA", "gain_pct"] == pytest.approx(12.0)


def test_missing_baseline_leaves_average_empty(tmp_path):
    _seed_runs(tmp_path, "fam", "vista", [50], [50])
    with pytest.warns(T.MissingBenchmarkWarning):
        wide = T.to_paper_columns(T.load_lmms_results(tmp_path))
    with pytest.warns(T.MissingBenchmarkWarning, match="no baseline run"):
        tables = T.build_tables(wide)
    assert math.isnan(tables["semantic"].mean.at["fam-VISTA", T.AVG])


def test_override_cell_wins_and_is_recorded(tmp_path):
    _seed_runs(tmp_path, "llava-1.5-7b", "baseline", [62], [46])
    mapping = [b if b.column != "VQA-v2" else T.Benchmark(**{**b.__dict__, "overrides": (("llava-1.5-7b/baseline", 78.5),)})
               for b in T.load_benchmark_map()]  # fmt: skip
    with pytest.warns(T.MissingBenchmarkWarning):
        wide = T.to_paper_columns(T.load_lmms_results(tmp_path), mapping)
    assert wide["VQA-v2"].item() == 78.5
    prov = wide.attrs["provenance"]
    assert prov.loc[prov.column == "VQA-v2", "source"].item() == "override"


def test_map_override_syntax(tmp_path):
    text = T.DEFAULT_MAP.read_text().replace(
        'exact_match,none",,100,2,,"the paper',
        'exact_match,none",,100,2,llava-1.5-7b/baseline=78.50;*/vista/2=1,"the paper',
    )
    path = tmp_path / "map.csv"
    path.write_text(text)
    vqa = next(b for b in T.load_benchmark_map(path) if b.column == "VQA-v2")
    assert vqa.override_for("llava-1.5-7b", "baseline", 4) == 78.5
    assert vqa.override_for("tiny", "vista", 2) == 1.0 and vqa.override_for("tiny", "vista", 1) is None
    path.write_text(text.replace("=78.50", "=abc"))
    with pytest.raises(T.ResultsFormatError, match=r"map.csv row 2 .*override"):
        T.load_benchmark_map(path)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not a readable JSON file"),
        (json.dumps({"config": {}}), "key 'results' missing"),
        (json.dumps({"results": {"gqa": [0.5]}}), r"results\['gqa'\] is list"),
    ],
)
def test_malformed_file_names_file_and_key(tmp_path, content, match):
    path = tmp_path / "x__baseline__seed0" / "20260101_120000_results.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(T.ResultsFormatError, match=match) as err:
        T.load_lmms_results(tmp_path)
    assert str(path) in str(err.value)


def test_non_numeric_mapped_metric_is_a_gap_with_a_warning(tmp_path):
    path = write(tmp_path / "x__baseline__seed0" / "20260101_120000_results.json",
                 results_v07({"gqa": {"exact_match,none": "0.5"}}))  # fmt: skip
    long = T.load_lmms_results(tmp_path)
    with pytest.warns(
        T.MissingBenchmarkWarning, match=r"results\['gqa'\]\['exact_match,none'\] is not a number"
    ):
        wide = T.to_paper_columns(long)
    assert math.isnan(wide["GQA"].iloc[0])
    assert str(path) in str(path)


def test_dict_metric_without_mapped_field_is_a_gap_with_a_warning(tmp_path):
    write(tmp_path / "x__baseline__seed0" / "20260101_120000_results.json",
          results_v07({"gqa": {"exact_match,none": {"total": 0.5}}}))  # fmt: skip
    with pytest.warns(T.MissingBenchmarkWarning, match="is a dict with fields"):
        wide = T.to_paper_columns(T.load_lmms_results(tmp_path))
    assert math.isnan(wide["GQA"].iloc[0])


def test_bad_sidecar_and_missing_paths(tmp_path):
    write(tmp_path / "r" / "run.json", {"family": "tiny"})
    write(tmp_path / "r" / "20260101_120000_results.json", results_v07({"gqa": {"exact_match,none": 0.5}}))
    with pytest.raises(T.ResultsFormatError, match=r"run.json: key 'variant'"):
        T.load_lmms_results(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*_results.json"):
        T.load_lmms_results(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T.load_lmms_results(tmp_path / "nope")


# ------------------------------------------------------------------ CLI


def test_cli_writes_paper_and_run_tables(tmp_path, capsys):
    from vista.cli import main

    _seed_runs(tmp_path / "res", "llava-1.5-7b", "baseline", [62], [46])
    _seed_runs(tmp_path / "res", "llava-1.5-7b", "vista", [63], [47])
    assert main(["tables", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    for name in ("semantic", "general", "fine_grained"):
        for ext in ("md", "tex", "csv"):
            assert (out / "paper" / f"{name}.{ext}").is_file() and (out / "runs" / f"{name}.{ext}").is_file()
    assert (out / "runs" / "delta_semantic.md").is_file() and (out / "paper" / "audit.md").is_file()
    summary = (out / "tables.md").read_text()
    assert "| LLaVA-VISTA | 79.06 | 56.25 | 62.55 |" in summary  # the paper's row
    assert "| LLaVA-VISTA | — | — | 63.00 | 47.00 | — | — |" in summary  # the run's row, gaps marked
    assert "no value for VQA-v2" in (out / "warnings.txt").read_text()
    assert "2 of 12 printed averages" in capsys.readouterr().out


def test_cli_reports_malformed_file(tmp_path, capsys):
    from vista.cli import main

    bad = tmp_path / "res" / "x__baseline__seed0" / "20260101_120000_results.json"
    write(bad, {"results": {"gqa": "oops"}})
    assert main(["tables", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "results['gqa'] is str" in err


def test_choose_map_follows_the_tasks_in_the_results():
    import pandas as pd

    from analysis.tables import DEFAULT_MAP, LOCAL_MAP, choose_map, load_benchmark_map

    local_task = load_benchmark_map(LOCAL_MAP)[0].task
    assert choose_map(pd.DataFrame({"task": ["gqa", "mme"]})) == DEFAULT_MAP
    assert choose_map(pd.DataFrame({"task": [local_task]})) == LOCAL_MAP
    assert choose_map(pd.DataFrame({"task": ["unheard_of"]})) == DEFAULT_MAP  # tie: the paper's map

"""``vista report``: REPORT.md, training curves and a metrics file for one results folder of the pipeline.

    vista report --results results/tiny [--profile tiny]

Every number in REPORT.md is read from the folder's own files (stage stamps, Trainer logs, lmms-eval results,
probe and MI tables, the theory profile); nothing is typed in. All the numbers the report prints are also written
to ``report_metrics.json`` so that tests (and readers) can check them against the raw files.

Comparisons across seeds are paired by seed: for each seed s, ``d_s = score(variant, s) - score(baseline, s)``;
the report gives ``mean(d) ± sd(d)``, the two-sided paired t-test of mean(d) = 0 (``scipy.stats.ttest_rel``, n - 1
degrees of freedom; its p-value and the 95% confidence interval of mean(d)) and marks a cell ``*`` when p < 0.05.
With one seed no test is possible and nothing is marked. Every marker is defined under the table that uses it.

Modules: one per section of REPORT.md (:mod:`~analysis.report.training`, :mod:`~analysis.report.benchmarks`,
:mod:`~analysis.report.probes`, :mod:`~analysis.report.mi`, :mod:`~analysis.report.theory`,
:mod:`~analysis.report.conclusions`), the paired statistics (:mod:`~analysis.report.stats`), the document that
puts them together (:mod:`~analysis.report.document`) and ``vista report`` (:mod:`~analysis.report.cli`).
"""

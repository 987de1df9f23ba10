"""The synthetic scene world: scenes (``scenes``), their texts (``text``), the local lmms-eval suite
(``benchmarks``, hooks in ``lmms_utils``) and ``vista data synth`` (``cli``)."""

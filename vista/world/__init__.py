"""The synthetic scene world: scenes (``scenes``), their texts (``text``), the dataset folder (``synth``), the local
lmms-eval suite (``benchmarks``) and ``vista data synth`` (``cli``)."""

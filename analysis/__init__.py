"""analysis: measurement package beside :mod:`vista` (theory, probes, mutual information, tables, plots).

Dependencies point one way: ``analysis`` may import ``vista``, never the reverse.
"""

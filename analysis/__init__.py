"""analysis: measurement package beside :mod:`vista` (``theory``, ``probes``, ``mi``, ``tables``, ``report``:
one package per concept, each with its subcommand's ``cli.py``).

Dependencies point one way: ``analysis`` may import ``vista``, never the reverse.
"""

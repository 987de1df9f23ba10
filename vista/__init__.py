"""vista: the VISTA objective for LLaVA-style multimodal LLMs, and the training code around it.

The objective lives in :mod:`vista.loss`; :mod:`vista.model` hooks it into transformers' VLMs.
"""

__version__ = "0.1.0"

"""Collapse diagnostics of one batch, computed on the device without a host sync (logged by the trainer).

With ``h_v`` the anchor state of each sample with an image (as the VISTA term uses it) and ``E`` the set of
*distinct* embedding rows used as alignment targets in the batch (deduplicated by token id, without ``unique``,
by weighting each position of token ``k`` with ``1/count_k``):

- ``diag_hv_norm``: mean over samples of ``||h_v||``.
- ``diag_text_norm``: mean over the rows of ``E`` of ``||e||``.
- ``diag_text_cos``: mean cosine over the ``n(n-1)`` ordered pairs of distinct rows of ``E``:
  ``(||sum_k u_k||^2 - n) / (n (n-1))`` with ``u_k = e_k / ||e_k||`` (NaN when ``n < 2``).
- ``diag_text_erank``: effective rank (Roy & Vetterli 2007) of ``E``: ``exp(-sum_i p_i log p_i)``,
  ``p_i = s_i / sum_j s_j`` over the singular values ``s_i`` of ``E`` (from the eigenvalues of ``E^T E``, which equals
  ``sum over positions of e e^T / count``: no (n, H) gather, one (H, H) Gram).
- ``diag_hv_target_cos``: mean over samples of ``cos(h_v, mean_t e_t)``, the mean over that sample's target
  positions (unweighted).

The collapse explanation predicts that under the VISTA term ``diag_hv_target_cos`` and ``diag_text_cos`` rise and
``diag_text_erank`` falls relative to the baseline. Cost per call: O(B S H + H^3) (the eigendecomposition).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vista.loss import Anchor, anchor_states

NAMES = ("diag_hv_norm", "diag_text_norm", "diag_text_cos", "diag_text_erank", "diag_hv_target_cos")
_EPS = 1e-8


@torch.no_grad()
def batch_diagnostics(
    hidden_states: Tensor,
    input_embeds: Tensor,
    image_mask: Tensor,
    text_mask: Tensor,
    input_ids: Tensor,
    vocab_size: int,
    anchor: Anchor = "last",
) -> Tensor:
    """The :data:`NAMES` values of one batch as a float32 (5,) tensor on the batch's device (see module docstring).

    Args:
        hidden_states: (B, S, H) final hidden states after the final norm.
        input_embeds: (B, S, H) token-embedding outputs.
        image_mask, text_mask: (B, S) bool (:func:`vista.loss.build_vista_masks`).
        input_ids: (B, S) token ids (deduplicate the embedding rows).
        vocab_size: number of embedding rows (every id is below it).
        anchor: "last" or "mean" image token, as the VISTA config.

    Samples without an image or a target are excluded from the per-sample means (NaN if none has both).
    """
    dtype = torch.promote_types(hidden_states.dtype, torch.float32)
    hidden, embeds = hidden_states.detach().to(dtype), input_embeds.detach().to(dtype)
    text = text_mask.bool()
    valid = image_mask.any(dim=1) & text.any(dim=1)  # (B,)
    num_valid = valid.sum().to(dtype)
    h_v = anchor_states(hidden, image_mask, anchor)  # (B, H)

    hv_norm = (torch.linalg.vector_norm(h_v, dim=-1) * valid).sum() / num_valid
    counts_per_sample = text.sum(dim=1, keepdim=True).clamp(min=1).to(dtype)
    mean_target = (embeds * text[..., None]).sum(dim=1) / counts_per_sample  # (B, H)
    cos = torch.nn.functional.cosine_similarity(h_v, mean_target, dim=-1, eps=_EPS)
    hv_target_cos = (cos * valid).sum() / num_valid

    # Distinct rows: position weight 1/count of its token id (scatter_add: no sync, unlike unique/bincount).
    ids = torch.where(text, input_ids, torch.zeros_like(input_ids)).flatten()
    counts = torch.zeros(vocab_size, dtype=dtype, device=ids.device)
    counts.scatter_add_(0, ids, text.flatten().to(dtype))
    weight = text.flatten().to(dtype) / counts[ids].clamp(min=1.0)  # (B*S,), sums to n distinct ids
    rows = embeds.reshape(-1, embeds.shape[-1])
    n = weight.sum()
    norms = torch.linalg.vector_norm(rows, dim=-1)
    text_norm = (weight * norms).sum() / n
    unit_sum = (rows / norms.clamp(min=_EPS)[:, None] * weight[:, None]).sum(dim=0)
    text_cos = (unit_sum.square().sum() - n) / (n * (n - 1))
    # (H, H) = E^T E over distinct rows, in float64: sqrt turns float32 rounding of the zero eigenvalues (n < H)
    # into spurious singular values; those below the rank tolerance of numpy.linalg.matrix_rank are dropped.
    rows64 = rows.double()
    gram = rows64.T @ (rows64 * weight.double()[:, None])
    singular = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()
    tolerance = singular.max() * max(gram.shape) * torch.finfo(rows.dtype).eps
    singular = torch.where(singular > tolerance, singular, torch.zeros_like(singular))
    p = singular / singular.sum().clamp(min=_EPS)
    erank = torch.exp(-(torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))).sum()).to(dtype)
    return torch.stack([hv_norm, text_norm, text_cos, erank, hv_target_cos]).float()

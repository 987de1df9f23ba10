"""vista_loss against an independent per-sample transcription of the official semantics (REFERENCE section 1)."""

from __future__ import annotations

import itertools

import pytest
import torch

from vista.loss import (
    IGNORE_INDEX,
    VistaConfig,
    alignment_terms,
    anchor_states,
    build_vista_masks,
    vista_loss,
)

H = 8


def reference_vista(
    hidden, embeds, image_mask, text_mask, distance, weighting, coefficient=1.0, anchor="last"
):
    """Python loop over samples and tokens, written from the formula (not from vista/loss.py).

    Per sample with an image and T >= 1 target tokens: h_v = state at the last image token (or the mean over image
    tokens); l2: (1/T) sum_t w_t ||h_v - e_t||^2 / d; cosine: -(1/T) sum_t w_t cos(h_v, e_t); w_t = t/T, t or 1.
    Batch: mean over such samples, times the coefficient. Similarity: mean over samples of the unweighted mean.
    """
    batch, seq, dim = hidden.shape
    losses, similarities = [], []
    for b in range(batch):
        image_positions = [s for s in range(seq) if image_mask[b, s]]
        text_positions = [s for s in range(seq) if text_mask[b, s]]
        if not image_positions or not text_positions:
            continue
        if anchor == "last":
            h_v = hidden[b, image_positions[-1]]
        else:
            h_v = sum(hidden[b, s] for s in image_positions) / len(image_positions)
        T = len(text_positions)
        weighted, plain = 0.0, 0.0
        for t, s in enumerate(text_positions, start=1):
            e_t = embeds[b, s]
            if distance == "l2":
                value = ((h_v - e_t) ** 2).sum() / dim
            else:
                value = (h_v @ e_t) / (h_v.norm() * e_t.norm())
            w_t = {"linear": t / T, "position": float(t), "uniform": 1.0}[weighting]
            weighted = weighted + w_t * value
            plain = plain + value
        sign = 1.0 if distance == "l2" else -1.0
        losses.append(sign * weighted / T)
        similarities.append(plain / T)
    if not losses:
        return torch.zeros((), dtype=hidden.dtype), torch.zeros((), dtype=hidden.dtype), 0
    loss = coefficient * sum(losses) / len(losses)
    return loss, (sum(similarities) / len(similarities)).detach(), len(losses)


def random_batch(seed: int, padding_side: str, batch: int = 6, dim: int = H):
    """A ragged batch: per sample 0-3 images of 1-7 tokens each at random places among 0-9 text tokens, padded.

    Image-token states and embeddings, padding included, hold random values (they must be ignored, not zeroed).
    """
    gen = torch.Generator().manual_seed(seed)

    def randint(low, high):
        return int(torch.randint(low, high + 1, (), generator=gen))

    rows = []
    for _ in range(batch):
        kinds = ["text"] * randint(0, 9)
        for _ in range(randint(0, 3)):
            kinds.insert(randint(0, len(kinds)), ["image"] * randint(1, 7))
        rows.append([k for item in kinds for k in (item if isinstance(item, list) else [item])])
    rows[0] = ["text", "text"] + ["image"] * 5 + ["text"] * 4  # always at least one valid sample
    rows[1] = ["text"] * 3  # a sample without an image
    seq = max(len(r) for r in rows) + 2
    image_mask = torch.zeros(batch, seq, dtype=torch.bool)
    text_mask = torch.zeros(batch, seq, dtype=torch.bool)
    for b, row in enumerate(rows):
        offset = 0 if padding_side == "right" else seq - len(row)
        for i, kind in enumerate(row):
            (image_mask if kind == "image" else text_mask)[b, offset + i] = True
    hidden = torch.randn(batch, seq, dim, generator=gen, dtype=torch.float64)
    embeds = torch.randn(batch, seq, dim, generator=gen, dtype=torch.float64)
    return hidden, embeds, image_mask, text_mask


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("seed", range(4))
def test_parity_with_per_sample_reference(seed, padding_side):
    hidden, embeds, image_mask, text_mask = random_batch(seed, padding_side)
    for distance, weighting, anchor in itertools.product(
        ("l2", "cosine"), ("linear", "position", "uniform"), ("last", "mean")
    ):
        out = vista_loss(
            hidden,
            embeds,
            image_mask,
            text_mask,
            VistaConfig(distance=distance, weighting=weighting, anchor=anchor),
        )
        ref_loss, ref_sim, ref_n = reference_vista(
            hidden, embeds, image_mask, text_mask, distance, weighting, anchor=anchor
        )
        case = f"{distance}/{weighting}/{anchor}"
        assert out.loss.dtype == torch.float64, case
        torch.testing.assert_close(out.loss, ref_loss, rtol=1e-9, atol=1e-9, msg=case)
        torch.testing.assert_close(out.similarity, ref_sim, rtol=1e-9, atol=1e-9, msg=case)
        assert int(out.num_samples) == ref_n, case


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("weighting", ["linear", "position"])
@pytest.mark.parametrize("anchor", ["last", "mean"])
def test_gradients_match_reference(distance, weighting, anchor):
    hidden, embeds, image_mask, text_mask = random_batch(11, "left")
    grads = []
    for fn in ("vista", "reference"):
        h, e = hidden.clone().requires_grad_(), embeds.clone().requires_grad_()
        if fn == "vista":
            loss = vista_loss(
                h,
                e,
                image_mask,
                text_mask,
                VistaConfig(distance=distance, weighting=weighting, anchor=anchor),
            ).loss
        else:
            loss = reference_vista(h, e, image_mask, text_mask, distance, weighting, anchor=anchor)[0]
        loss.backward()
        grads.append((h.grad, e.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-9, atol=1e-12)


def test_gradient_reaches_anchor_and_targets_only():
    hidden, embeds, image_mask, text_mask = random_batch(3, "right")
    h, e = hidden.clone().requires_grad_(), embeds.clone().requires_grad_()
    vista_loss(h, e, image_mask, text_mask).loss.backward()
    has_image = image_mask.any(dim=1)
    positions = torch.arange(image_mask.shape[1]).expand_as(image_mask)
    last_image = torch.where(image_mask, positions, -1).amax(dim=1)
    for b in range(hidden.shape[0]):
        touched_h = h.grad[b].abs().sum(-1) > 0
        touched_e = e.grad[b].abs().sum(-1) > 0
        if has_image[b] and text_mask[b].any():
            assert touched_h.nonzero().flatten().tolist() == [int(last_image[b])]
            assert torch.equal(touched_e, text_mask[b])
        else:
            assert not touched_h.any() and not touched_e.any()


def test_detach_targets_stops_gradient_into_embeddings():
    hidden, embeds, image_mask, text_mask = random_batch(5, "left")
    h, e = hidden.clone().requires_grad_(), embeds.clone().requires_grad_()
    out = vista_loss(h, e, image_mask, text_mask, VistaConfig(detach_targets=True))
    out.loss.backward()
    assert e.grad is None
    assert h.grad.abs().sum() > 0
    torch.testing.assert_close(out.loss, vista_loss(hidden, embeds, image_mask, text_mask).loss)


def test_coefficient_scales_loss_not_similarity():
    hidden, embeds, image_mask, text_mask = random_batch(7, "right")
    base = vista_loss(hidden, embeds, image_mask, text_mask, VistaConfig(distance="cosine"))
    scaled = vista_loss(
        hidden, embeds, image_mask, text_mask, VistaConfig(distance="cosine", coefficient=0.25)
    )
    torch.testing.assert_close(scaled.loss, 0.25 * base.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(scaled.similarity, base.similarity, rtol=0, atol=0)


@pytest.mark.parametrize("T", [1, 4, 9])
def test_similarity_and_sign_on_planted_alignment(T):
    """Every target equal to the anchor: l2 distance 0; cosine 1, loss -(1/T) sum t/T = -(T+1)/(2T), raw t: -(T+1)/2."""
    vector = torch.randn(H, dtype=torch.float64)
    seq = T + 3
    hidden = torch.randn(1, seq, H, dtype=torch.float64)
    embeds = torch.randn(1, seq, H, dtype=torch.float64)
    image_mask = torch.zeros(1, seq, dtype=torch.bool)
    image_mask[0, :3] = True
    text_mask = ~image_mask
    hidden[0, 2] = vector
    embeds[0, 3:] = 3.0 * vector  # same direction, different norm
    cos = vista_loss(hidden, embeds, image_mask, text_mask, VistaConfig(distance="cosine"))
    torch.testing.assert_close(cos.similarity, torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(cos.loss, torch.tensor(-(T + 1) / (2 * T), dtype=torch.float64))
    raw = vista_loss(
        hidden, embeds, image_mask, text_mask, VistaConfig(distance="cosine", weighting="position")
    )
    torch.testing.assert_close(raw.loss, torch.tensor(-(T + 1) / 2, dtype=torch.float64))
    embeds[0, 3:] = vector
    l2 = vista_loss(hidden, embeds, image_mask, text_mask)
    torch.testing.assert_close(l2.loss, torch.tensor(0.0, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(l2.similarity, torch.tensor(0.0, dtype=torch.float64), rtol=0, atol=1e-12)
    # Moving the anchor by +1 in every coordinate: MSE 1 per token; loss (1/T) sum t/T = (T+1)/(2T).
    hidden[0, 2] = vector + 1.0
    l2 = vista_loss(hidden, embeds, image_mask, text_mask)
    torch.testing.assert_close(l2.similarity, torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(l2.loss, torch.tensor((T + 1) / (2 * T), dtype=torch.float64))


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_batch_without_image_gives_zero_with_graph(distance):
    hidden = torch.randn(3, 5, H, requires_grad=True)
    embeds = torch.randn(3, 5, H, requires_grad=True)
    image_mask = torch.zeros(3, 5, dtype=torch.bool)
    out = vista_loss(hidden, embeds, image_mask, ~image_mask, VistaConfig(distance=distance))
    assert out.loss.requires_grad and float(out.loss.detach()) == 0.0
    assert int(out.num_samples) == 0 and float(out.similarity) == 0.0
    out.loss.backward()
    assert torch.count_nonzero(hidden.grad) == 0 and torch.count_nonzero(embeds.grad) == 0


def test_image_only_sample_is_excluded_and_not_counted():
    hidden, embeds, image_mask, text_mask = random_batch(2, "right")
    image_mask[2], text_mask[2] = True, False  # sample 2 is all image tokens
    out = vista_loss(hidden, embeds, image_mask, text_mask)
    ref_loss, _, ref_n = reference_vista(hidden, embeds, image_mask, text_mask, "l2", "linear")
    torch.testing.assert_close(out.loss, ref_loss, rtol=1e-9, atol=1e-9)
    assert int(out.num_samples) == ref_n
    only = vista_loss(hidden[2:3], embeds[2:3], image_mask[2:3], text_mask[2:3])
    assert float(only.loss) == 0.0 and int(only.num_samples) == 0


def test_float32_and_bfloat16_accumulate_in_float32():
    hidden, embeds, image_mask, text_mask = random_batch(9, "left")
    exact = vista_loss(hidden, embeds, image_mask, text_mask).loss
    for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 2e-2)):
        out = vista_loss(hidden.to(dtype), embeds.to(dtype), image_mask, text_mask)
        assert out.loss.dtype == torch.float32
        torch.testing.assert_close(out.loss.double(), exact, rtol=tol, atol=tol)


def test_bad_inputs_raise_clear_errors():
    hidden, embeds, image_mask, text_mask = random_batch(0, "right")
    with pytest.raises(ValueError, match="hidden_states must be"):
        vista_loss(hidden[0], embeds[0], image_mask[0], text_mask[0])
    with pytest.raises(ValueError, match="input_embeds shape"):
        vista_loss(hidden, embeds[:, :-1], image_mask, text_mask)
    with pytest.raises(ValueError, match="image_mask must be"):
        vista_loss(hidden, embeds, image_mask[:, :-1], text_mask)
    with pytest.raises(TypeError, match="text_mask must be a bool"):
        vista_loss(hidden, embeds, image_mask, text_mask.long())
    with pytest.raises(TypeError, match="floating point"):
        vista_loss(hidden.long(), embeds, image_mask, text_mask)
    with pytest.raises(ValueError, match="distance"):
        vista_loss(hidden, embeds, image_mask, text_mask, VistaConfig(distance="l1"))
    with pytest.raises(ValueError, match="weighting"):
        vista_loss(hidden, embeds, image_mask, text_mask, VistaConfig(weighting="log"))
    with pytest.raises(RuntimeError, match="overlaps"):
        vista_loss(hidden, embeds, image_mask, text_mask | image_mask)
    with pytest.raises(ValueError, match="coefficient"):
        VistaConfig(coefficient=-1.0)
    with pytest.raises(ValueError, match="anchor"):
        VistaConfig(anchor="first")


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"enabled": "no"}, "enabled must be True or False"),  # a truthy string would enable the term
        ({"detach_targets": "false"}, "detach_targets must be True or False"),
        ({"coefficient": float("inf")}, "finite"),  # 0 * inf = NaN on a text-only batch
        ({"coefficient": float("nan")}, "finite"),
        ({"coefficient": "0.5"}, "must be a number"),
    ],
)
def test_config_refuses_values_that_would_silently_mean_something_else(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        VistaConfig(**kwargs)


def test_build_vista_masks_padding_image_and_supervised_targets():
    image_id, pad = 7, 0
    input_ids = torch.tensor([[pad, pad, 3, 7, 7, 4, 5], [3, 7, 4, 5, 6, pad, pad]])
    attention = (input_ids != pad).long()
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, 5:] = input_ids[:, 5:]
    labels[1, 5:] = IGNORE_INDEX
    labels[1, 4] = 6
    image_mask, text_mask = build_vista_masks(input_ids, attention, image_id)
    assert image_mask.tolist() == [[0, 0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0]]
    assert text_mask.tolist() == [[0, 0, 1, 0, 0, 1, 1], [1, 0, 1, 1, 1, 0, 0]]
    _, supervised = build_vista_masks(input_ids, attention, image_id, labels, "supervised")
    assert supervised.tolist() == [[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 0, 0]]
    no_padding = build_vista_masks(input_ids, None, image_id)[1]
    assert no_padding.tolist() == (input_ids != image_id).tolist()
    with pytest.raises(ValueError, match="needs labels"):
        build_vista_masks(input_ids, attention, image_id, None, "supervised")
    # a mask one position too long used to surface as torch's bare broadcast RuntimeError
    with pytest.raises(
        ValueError, match=r"attention_mask must have input_ids' shape \(B, S\) = \(2, 7\), got \(2, 8\)"
    ):
        build_vista_masks(input_ids, torch.ones(2, 8), image_id)
    with pytest.raises(ValueError, match="labels must have"):
        build_vista_masks(input_ids, attention, image_id, labels[:, :-1], "supervised")


def test_an_empty_sequence_is_a_clear_error():
    """S = 0 used to fail inside the anchor's reduction (``IndexError: amax(): Expected reduction dim 1 ...``)."""
    hidden, empty = torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool)
    with pytest.raises(ValueError, match="B, S, H >= 1"):
        vista_loss(hidden, hidden, empty, empty)


@pytest.mark.parametrize("anchor", ["last", "mean"])
@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_public_helpers_give_the_terms_the_loss_averages(anchor, distance):
    """anchor_states + alignment_terms (used by the probes and MI) reproduce each sample's similarity of the loss."""
    hidden, embeds, image_mask, text_mask = random_batch(5, "left")
    anchors = anchor_states(hidden, image_mask, anchor)
    assert anchors.shape == (hidden.shape[0], H)
    for b in range(hidden.shape[0]):
        if not image_mask[b].any() or not text_mask[b].any():
            continue
        positions = image_mask[b].nonzero().flatten()
        expected = hidden[b, positions[-1]] if anchor == "last" else hidden[b, positions].mean(dim=0)
        torch.testing.assert_close(anchors[b], expected)
        terms = alignment_terms(anchors[b], embeds[b, text_mask[b]])[distance]  # (T,)
        one = vista_loss(hidden[b : b + 1], embeds[b : b + 1], image_mask[b : b + 1], text_mask[b : b + 1],
                         VistaConfig(distance=distance, anchor=anchor))  # fmt: skip
        torch.testing.assert_close(terms.mean(), one.similarity, rtol=1e-9, atol=1e-12)

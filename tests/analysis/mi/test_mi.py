"""MI estimators against known MI (correlated Gaussians), their bounds, invariances and input errors; `vista mi`."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import mi as M
from analysis.mi import estimate_mi, rho_for_mi, sample_correlated_gaussians
from analysis.mi.critics import _MovingAverage
from analysis.mi.features import load_features
from analysis.mi.states import collect_states

N = 5000


def gaussians(mi: float, dim: int, seed: int, n: int = N):
    return sample_correlated_gaussians(n, [rho_for_mi(mi, dim)] * dim, seed=seed)


# ----------------------------------------------------------------------------- ground truth helpers


def test_ground_truth_sampler_has_the_stated_correlation_and_mi():
    rhos = [0.9, 0.5, 0.0]
    x, y, true = sample_correlated_gaussians(200_000, rhos, seed=1)
    corr = [np.corrcoef(x[:, i], y[:, i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(corr, rhos, atol=0.005)
    assert true == pytest.approx(-0.5 * (math.log(1 - 0.81) + math.log(1 - 0.25)))
    assert M.gaussian_mi([rho_for_mi(1.3, 4)] * 4) == pytest.approx(1.3)


# ----------------------------------------------------------------------------- KSG and Gaussian accuracy


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("mi", [0.1, 0.5, 1.0, 2.0])
def test_ksg_and_gaussian_within_0_05_nats_on_low_dimensional_gaussians(dim, mi):
    errors = {"ksg": [], "gaussian": []}
    for seed in range(2):
        x, y, true = gaussians(mi, dim, seed)
        for method in errors:
            errors[method].append(estimate_mi(x, y, method).value - true)
    for method, err in errors.items():
        assert abs(np.mean(err)) < 0.05, (method, err)
        assert max(abs(e) for e in err) < 0.08, (method, err)


def test_ksg_is_biased_low_at_high_dimension_and_high_mi_which_the_gaussian_estimator_is_not():
    # Falsifiable check that the test above is not vacuous: KSG's known negative bias appears where it should.
    x, y, true = gaussians(2.0, 5, seed=0)
    assert estimate_mi(x, y, "ksg").value < true - 0.2
    gauss = estimate_mi(x, y, "gaussian")
    assert abs(gauss.value - true) < 3 * gauss.stderr  # unbiased, sd ~0.02 nats at d = 5


@pytest.mark.parametrize("method", ["ksg", "gaussian"])
def test_independence_gives_about_zero(method):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((N, 3)), rng.standard_normal((N, 2))
    assert abs(estimate_mi(x, y, method).value) < 0.02


def test_gaussian_bias_correction_removes_the_small_sample_bias():
    plug, corrected = [], []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        x, y = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
        plug.append(estimate_mi(x, y, "gaussian", bias_correct=False).value)
        corrected.append(estimate_mi(x, y, "gaussian").value)
    # Plug-in MI under independence is about d_x d_y / (2N) = 0.11 nats here; the corrected one is unbiased.
    assert np.mean(plug) > 0.08
    assert abs(np.mean(corrected)) < 3 * np.std(corrected) / math.sqrt(300)


def test_cube_transform_leaves_ksg_approximately_invariant_but_biases_the_gaussian_estimator():
    # Measured over 8 seeds (d = 1, I = 1 nat): KSG shifts by -0.02 +- 0.01 nats, Gaussian by -0.26 +- 0.03.
    shift, ksg_err, gauss_err = [], [], []
    for seed in range(2):
        x, y, true = gaussians(1.0, 1, seed=seed)
        ksg, ksg_cube = estimate_mi(x, y, "ksg").value, estimate_mi(x**3, y**3, "ksg").value
        shift.append(ksg_cube - ksg)
        ksg_err.append(ksg_cube - true)
        gauss_err.append(estimate_mi(x**3, y**3, "gaussian").value - true)
    assert abs(np.mean(shift)) < 0.05 and abs(np.mean(ksg_err)) < 0.05
    assert np.mean(gauss_err) < -0.15  # corr(x^3, y^3) < rho: the Gaussian estimate is only a lower bound


def test_ksg_exact_on_a_constant_variable_and_on_tie_free_permutations():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 2))
    # y constant: every n_y = N - 1 and n_x = k - 1, so the estimate is exactly psi(k) - psi(k) = 0.
    assert estimate_mi(x, np.ones(500), "ksg").value == pytest.approx(0.0, abs=1e-12)
    # Row order does not matter.
    y = x[:, :1] + rng.standard_normal((500, 1))
    perm = rng.permutation(500)
    # (jitter=0: the default jitter is drawn in row order; this data has no ties to break)
    unjittered = estimate_mi(x, y, "ksg", jitter=0).value
    assert unjittered == pytest.approx(estimate_mi(x[perm], y[perm], "ksg", jitter=0).value)


def test_ksg_is_zero_for_a_constant_target_with_a_few_duplicated_samples():
    # Pairs of identical samples (fewer than k duplicates each): unjittered KSG counted the tied neighbours wrongly
    # and gave 0.5 nats for I(x; constant) = 0 (and 0.11 nats at a checkpoint's constant first text token).
    rng = np.random.default_rng(0)
    x = np.repeat(rng.standard_normal((20, 8)), 2, axis=0)
    for options in ({}, {"pca_dim": 8}):
        assert abs(estimate_mi(x, np.zeros(40), **options).value) < 1e-9
    y = np.repeat(rng.standard_normal((20, 1)), 2, axis=0)
    assert abs(estimate_mi(y, np.zeros(40)).value) < 1e-9  # the constant side may be either
    with pytest.raises(ValueError, match=r"40 samples have an exact duplicate.*jitter=1e-06 \(the default"):
        estimate_mi(x, np.zeros(40), jitter=0)  # no silent bias when the jitter is turned off
    # The default jitter leaves known MI on continuous data alone (measured shift <= 2e-5 nats).
    xg, yg, true = gaussians(0.5, 2, seed=0)
    assert estimate_mi(xg, yg).value == pytest.approx(estimate_mi(xg, yg, jitter=0).value, abs=1e-4)
    assert abs(estimate_mi(xg, yg).value - true) < 0.05


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_ksg_rejects_a_bad_neighbour_count(k):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"KSG needs k >= 1 neighbours \(an integer\), got k="):
        estimate_mi(rng.standard_normal((50, 2)), rng.standard_normal(50), "ksg", k=k)


def test_ksg_matches_a_brute_force_implementation():
    from scipy.special import digamma

    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((300, 2)), rng.standard_normal((300, 1))
    y = y + x[:, :1]
    xs, ys = M.zscore(x), M.zscore(y)
    dx = np.abs(xs[:, None] - xs[None]).max(-1)
    dy = np.abs(ys[:, None] - ys[None]).max(-1)
    dz = np.maximum(dx, dy)
    np.fill_diagonal(dz, np.inf)
    k = 3
    eps = np.sort(dz, axis=1)[:, k - 1]
    nx = (dx < eps[:, None]).sum(1) - 1
    ny = (dy < eps[:, None]).sum(1) - 1
    expected = digamma(k) + digamma(300) - np.mean(digamma(nx + 1) + digamma(ny + 1))
    assert estimate_mi(x, y, "ksg", k=k).value == pytest.approx(expected, abs=1e-10)


# ----------------------------------------------------------------------------- critic bounds


def test_infonce_never_exceeds_log_batch_and_the_cap_binds_at_high_mi():
    x, y, true = sample_correlated_gaussians(400, [0.999] * 4, seed=0)  # true MI ~ 12.4 nats >> log 200
    est = estimate_mi(x, y, "infonce", steps=300, eval_batch_size=1024)
    assert est.cap == pytest.approx(math.log(200))
    assert est.value <= est.cap + 1e-9
    assert est.value > est.cap - 0.5  # well trained: saturates its cap, far below the true MI
    # Arbitrary scores, even a huge diagonal, never exceed log B.
    scores = torch.randn(64, 64) + torch.diag(torch.full((64,), 1e4))
    assert float(M.infonce_bound(scores)) <= math.log(64) + 1e-6
    # Unequal eval batches: the cap is the size-weighted mean of log B_b.
    est2 = estimate_mi(x, y, "infonce", steps=50, eval_batch_size=64)
    sizes = [len(c) for c in np.array_split(np.arange(200), 4)]
    assert est2.cap == pytest.approx(np.dot(sizes, np.log(sizes)) / 200)
    assert est2.value <= est2.cap + 1e-9


@pytest.mark.parametrize("method", M.CRITIC_METHODS)
def test_critic_methods_recover_moderate_mi_and_zero_under_independence(method):
    x, y, true = gaussians(0.5, 2, seed=1, n=2000)
    est = estimate_mi(x, y, method, steps=300, hidden=32, embed=16)
    assert true - 0.15 < est.value < true + 0.08, est.value
    assert est.n_train == est.n_eval == 1000 and len(est.train_curve) == 300
    rng = np.random.default_rng(2)
    zero = estimate_mi(rng.standard_normal((2000, 2)), rng.standard_normal((2000, 2)), method, steps=100)
    assert abs(zero.value) < 0.05, zero.value


def test_an_overfit_critic_is_flagged_below_the_floor_and_a_working_one_is_not():
    # 20 training pairs of independent 8-D variables: the critic memorises them (training bound near log 20) and
    # scores new pairs far worse than a constant critic (0 nats): measured -2.8 nats at 50 steps, -9.5 at 200.
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 8)), rng.standard_normal((40, 8))
    est = estimate_mi(x, y, "infonce", steps=200)
    assert est.value < -1 and est.details["train_bound"] > 2 and est.details["below_floor"]
    message = M.critic_warning([est.as_row()])
    assert "infonce: 1 of 1 held-out estimates are below -0.25 nats" in message and "overfit" in message
    xg, yg, _ = gaussians(0.5, 2, seed=1, n=2000)
    good = estimate_mi(xg, yg, "infonce", steps=300, hidden=32, embed=16)
    assert not good.details["below_floor"] and M.critic_warning([good.as_row()]) is None


def test_critic_inputs_are_standardised_so_the_scale_of_x_does_not_matter():
    # PCA scores (std ~5 on a checkpoint's states) made the critic overfit faster: -12.8 vs -3.5 nats at 50 steps.
    x, y, _ = gaussians(0.5, 2, seed=0, n=400)
    small = estimate_mi(x, y, "infonce", standardize=False, steps=50).value
    assert estimate_mi(100 * x, y, "infonce", standardize=False, steps=50).value == pytest.approx(
        small, abs=1e-3
    )


def test_critics_are_deterministic_per_seed_and_leave_global_rng_alone():
    x, y, _ = gaussians(0.5, 1, seed=0, n=600)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = estimate_mi(x, y, "nwj", steps=40, seed=7)
    after = torch.rand(1)
    b = estimate_mi(x, y, "nwj", steps=40, seed=7)
    c = estimate_mi(x, y, "nwj", steps=40, seed=8)
    assert torch.equal(before, after)
    assert a.value == b.value and np.array_equal(a.train_curve, b.train_curve)
    assert a.value != c.value
    assert not a.details["eval_on_train"]
    on_train = estimate_mi(x, y, "nwj", steps=5, eval_fraction=0)
    assert on_train.n_train == on_train.n_eval == 600 and on_train.details["eval_on_train"]


def test_mine_moving_average_gives_the_bias_corrected_gradient():
    torch.manual_seed(0)
    scores = torch.randn(6, 6, requires_grad=True)
    ma = _MovingAverage(rate=0.5, log_value=math.log(3.0))
    ma.loss(scores).backward()
    off = ~torch.eye(6, dtype=torch.bool)
    e = torch.exp(scores.detach())
    batch_mean = e[off].mean()
    new_ma = 0.5 * 3.0 + 0.5 * batch_mean  # updated before use
    expected = torch.zeros(6, 6)
    expected[~off] = -1 / 6  # -d/df_ii of mean(f_ii)
    expected[off] = e[off] / (30 * new_ma)  # d/df_ij of E_q[e^f] / ma
    torch.testing.assert_close(scores.grad, expected)
    assert ma.log_value == pytest.approx(math.log(float(new_ma)))


def test_smile_clip_bounds_the_partition_term_and_reduces_to_dv_without_clipping():
    scores = torch.randn(32, 32) * 4
    assert float(M.dv_bound(scores, clip=1e6)) == pytest.approx(float(M.dv_bound(scores)))
    clipped = float(M.dv_bound(scores, clip=1.0))
    assert float(scores.diag().mean()) - 1.0 <= clipped <= float(scores.diag().mean()) + 1.0


def test_concat_critic_and_eval_curve():
    x, y, true = gaussians(0.5, 1, seed=2, n=800)
    est = estimate_mi(x, y, "infonce", critic="concat", steps=150, hidden=32, eval_every=50, batch_size=64)
    assert [s for s, _ in est.eval_curve] == [50, 100, 150]
    assert est.eval_curve[-1][1] == pytest.approx(est.value)
    assert true - 0.2 < est.value < true + 0.1


# ----------------------------------------------------------------------------- preprocessing and errors


def test_pca_keeps_the_informative_directions():
    x, y, true = gaussians(1.0, 2, seed=0)
    rng = np.random.default_rng(0)
    x_wide = np.hstack([x * 10, 0.1 * rng.standard_normal((N, 30))])  # signal in the top-variance directions
    est = estimate_mi(x_wide, y, "gaussian", pca_dim=2, standardize=False)
    assert est.dim_x == 2 and est.details["pca_explained_x"] > 0.99
    assert est.value == pytest.approx(estimate_mi(x, y, "gaussian").value, abs=0.01)


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros((10, 2)), np.zeros((9, 2)), "same number of samples"),
        (np.zeros((10, 2, 2)), np.zeros((10, 2)), r"x must have shape \(N,\) or \(N, d\)"),
        (np.zeros((10, 0)), np.zeros((10, 2)), "no columns"),
        (
            np.array([[0.0], [np.nan], [1.0], [2], [3], [4]]),
            np.arange(6.0),
            r"x has 1 non-finite.*first rows: \[1\]",
        ),
        (np.arange(4.0), np.arange(4.0), "too few samples: got 4"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, y, match):
    with pytest.raises(ValueError, match=match):
        estimate_mi(x, y, "ksg")


def test_unknown_method_duplicates_and_singular_covariance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 2))
    with pytest.raises(ValueError, match="unknown method 'knn'"):
        estimate_mi(x, x, "knn")
    dup = np.repeat(x[:25], 4, axis=0)
    with pytest.raises(ValueError, match="exact duplicate.*jitter"):
        estimate_mi(dup, dup[:, :1], "ksg", jitter=0)
    assert estimate_mi(dup, dup[:, :1], "ksg").value > 0  # the default jitter breaks the ties
    with pytest.raises(ValueError, match="singular.*pca_dim"):
        estimate_mi(np.hstack([x, x[:, :1]]), x[:, :1] + rng.standard_normal((100, 1)), "gaussian")
    with pytest.raises(ValueError, match="too few samples for a train/eval split"):
        estimate_mi(x[:8], x[:8], "infonce", eval_fraction=0.9)


# ----------------------------------------------------------------------------- vista mi


def test_cli_features_npz_and_parquet(tmp_path):
    from vista.cli import main

    x, y, true = gaussians(0.5, 2, seed=0, n=2000)
    np.savez(tmp_path / "f.npz", x=x, y=y)
    pd.DataFrame({"x": list(x), "y": list(y)}).to_parquet(tmp_path / "f.parquet")
    pd.DataFrame({"x_0": x[:, 0], "x_1": x[:, 1], "y_1": y[:, 1], "y_0": y[:, 0]}).to_parquet(
        tmp_path / "g.parquet"
    )
    expected = estimate_mi(x, y, "ksg").value
    for name in ("f.npz", "f.parquet", "g.parquet"):
        out = tmp_path / f"{name}.csv"
        assert main(["mi", "features", "--features", str(tmp_path / name), "--out", str(out)]) == 0
        table = pd.read_csv(out).set_index("method")
        assert table.loc["ksg", "mi"] == pytest.approx(expected)
        assert abs(table.loc["gaussian", "mi"] - true) < 0.05
    np.savez(tmp_path / "bad.npz", x=x)
    with pytest.raises(ValueError, match=r"no array y; it has x"):
        load_features(tmp_path / "bad.npz")
    bad = ["mi", "features", "--features", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o.csv")]
    assert main(bad) == 2  # one line on stderr (tests/vista/test_cli_errors.py)


def test_cli_warns_when_the_critic_is_below_the_floor(tmp_path, capsys):
    from vista.cli import main

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", x=rng.standard_normal((40, 8)), y=rng.standard_normal((40, 8)))
    args = ["mi", "features", "--features", str(tmp_path / "f.npz"), "--out", str(tmp_path / "o.csv")]
    assert main(args + ["--methods", "ksg", "infonce", "--steps", "200"]) == 0
    err = capsys.readouterr().err
    assert "warning: infonce: 1 of 1 held-out estimates are below -0.25 nats" in err and "overfit" in err
    assert bool(pd.read_csv(tmp_path / "o.csv").set_index("method").loc["infonce", "below_floor"])
    with pytest.raises(SystemExit) as exit_:
        main(args + ["--jitter", "-1"])
    assert exit_.value.code == 2 and "--jitter: must be a number >= 0, got -1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from PIL import Image

    from vista.tiny import build_tiny_llava, save_tiny_llava

    root = tmp_path_factory.mktemp("mi_ckpt")
    model, processor = build_tiny_llava(seed=0)
    save_tiny_llava(model, processor, root / "ckpt")
    rng = np.random.default_rng(0)
    records = []
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
        caption = "Describe the image." if i < 30 else "Describe the picture, please."
        records.append(
            {
                "id": str(i),
                "image": f"{i}.png",
                "conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": caption}],
            }
        )
    (root / "data.json").write_text(json.dumps(records))
    return root


def test_extract_states_matches_independent_hooks(tiny_checkpoint):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from analysis.mi.states import extract_states
    from vista.data import DataCollatorForVista, LlavaJsonDataset

    ckpt = tiny_checkpoint / "ckpt"
    processor = AutoProcessor.from_pretrained(ckpt)
    model = LlavaForConditionalGeneration.from_pretrained(ckpt).eval()
    data = LlavaJsonDataset(tiny_checkpoint / "data.json", None, processor, "plain", 128, show_progress=False)
    batch = DataCollatorForVista(processor)([data[i] for i in (0, 35)])
    states = extract_states(model, batch, [0, 35])
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True)
    image_id = model.config.image_token_id
    for row, s in enumerate(states):
        ids = batch["input_ids"][row]
        text = ((ids != image_id) & (batch["attention_mask"][row] == 1)).nonzero().flatten()
        last_image = (ids == image_id).nonzero().flatten()[-1]
        np.testing.assert_allclose(s.h_v, out.hidden_states[-1][row, last_image].numpy(), atol=1e-5)
        np.testing.assert_allclose(s.h_t, out.hidden_states[-1][row, text].numpy(), atol=1e-5)
        np.testing.assert_allclose(s.e_t, model.get_input_embeddings()(ids[text]).detach().numpy(), atol=1e-6)
        assert s.supervised.tolist() == (batch["labels"][row, text] != -100).tolist()
        assert s.supervised.any()


def test_cli_checkpoint_mi_by_position(tiny_checkpoint, tmp_path):
    from vista.cli import main

    out = tmp_path / "out"
    args = ["mi", "checkpoint", "--checkpoint", str(tiny_checkpoint / "ckpt"), "--data"]
    args += [str(tiny_checkpoint / "data.json"), "--out", str(out), "--pca-dim", "4", "--max-position", "3"]
    with pytest.raises(ValueError, match="cannot tell the conversation template"):
        collect_states(tiny_checkpoint / "ckpt", tiny_checkpoint / "data.json")  # no silent default template
    assert main(args) == 2  # the same, as one line naming --template
    args += ["--template", "plain"]
    assert main(args + ["--save-states", "--min-samples", "10"]) == 0
    table = pd.read_csv(out / "mi_by_position.csv", keep_default_na=False, na_values=[""])
    assert (out / "mi_by_position.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())["no_image"] == 0
    assert set(table["position"]) == {1, 2, 3} and set(table["target"]) == {"e_t", "h_t"}
    # Positions 1-3 are the same tokens in every sample: e_t is constant, so I(h_v; e_t) = 0 exactly for KSG, and
    # the Gaussian estimator's covariance is singular: a recorded skip, not a number.
    et = table[table.target == "e_t"]
    assert np.allclose(et[et.method == "ksg"]["mi"], 0.0, atol=1e-9)
    gauss = et[et.method == "gaussian"]
    assert gauss["mi"].isna().all() and gauss["skipped"].str.contains("singular").all()
    # h_t is a deterministic function of the image here (fixed text prefix): clearly positive MI.
    ht = table[(table.target == "h_t") & (table.method == "ksg")]
    assert (ht["mi"] > 0.5).all()
    states = np.load(out / "states.npz")
    assert states["h_v"].shape == (40, 64) and states["offsets"][-1] == states["e_t"].shape[0]


def test_saved_states_keep_the_tokens_before_the_image(tmp_path):
    # load_states used to drop before_image: notebook 03's positions then counted from the system prompt.
    from analysis.mi.states import SampleStates, load_states, save_states

    rng = np.random.default_rng(0)
    states = [
        SampleStates(
            i, rng.normal(size=2), rng.normal(size=(5, 2)), rng.normal(size=(5, 2)), np.ones(5, bool), 3
        )
        for i in range(4)
    ]
    save_states(states, tmp_path / "s.npz")
    loaded = load_states(tmp_path / "s.npz")
    assert [s.before_image for s in loaded] == [3] * 4
    np.testing.assert_array_equal(loaded[2].e_t, states[2].e_t)
    with np.load(tmp_path / "s.npz") as data:
        np.savez(tmp_path / "old.npz", **{k: data[k] for k in data.files if k != "before_image"})
    with pytest.warns(UserWarning, match="no before_image"):
        assert [s.before_image for s in load_states(tmp_path / "old.npz")] == [0] * 4


def test_cli_checkpoint_records_its_settings_and_accepts_a_data_folder(
    tiny_checkpoint, tmp_path, monkeypatch
):
    import matplotlib.figure

    from vista.cli import main

    titles = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "savefig",
        lambda fig, *a, **kw: titles.append(fig._suptitle.get_text()) or save(fig, *a, **kw),
    )
    run = tmp_path / "runs" / "tiny__vista__seed3" / "finetune"
    run.parent.mkdir(parents=True)
    run.symlink_to(tiny_checkpoint / "ckpt", target_is_directory=True)
    out = tmp_path / "out"
    args = ["mi", "checkpoint", "--checkpoint", str(run), "--data", str(tiny_checkpoint), "--out", str(out)]
    args += ["--template", "plain", "--max-position", "1", "--min-samples", "10", "--max-samples", "30"]
    assert main(args + ["--k", "4", "--seed", "2"]) == 0  # a folder holding one JSON, as vista probe takes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 30 and summary["cells"] == 4
    settings = summary["settings"]
    assert (
        settings["data"] == str(tiny_checkpoint / "data.json")
        and settings["run"] == "tiny__vista__seed3/finetune"
    )
    expected = {
        "methods": ["ksg", "gaussian"],
        "k": 4,
        "pca_dim": 8,
        "jitter": 1e-6,
        "seed": 2,
        "max_samples": 30,
    }
    assert {key: settings[key] for key in expected} == expected
    assert settings["standardize"] and settings["min_samples"] == 10 and settings["template"] == "plain"
    assert titles == [
        "tiny__vista__seed3/finetune: MI per text position (bands: approx. 95% interval, estimate +- 1.96 SE)"
    ]
    (tiny_checkpoint / "other.json").write_text("[]")
    try:
        assert main(args) == 2  # two JSON files: one line asking for the file
    finally:
        (tiny_checkpoint / "other.json").unlink()


def test_mi_figure_band_is_a_95_percent_interval(tmp_path, monkeypatch):
    import matplotlib.figure

    from analysis.mi.by_position import plot_mi_by_position

    figures = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **kw: figures.append(fig))
    table = pd.DataFrame(
        {"target": "e_t", "method": "ksg", "position": [1, 2], "mi": [0.5, 1.0], "stderr": [0.1, 0.2]}
    )
    plot_mi_by_position(table, tmp_path / "f.png")
    band = figures[0].axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.5 - 1.96 * 0.1) and band.max() == pytest.approx(1.0 + 1.96 * 0.2)


def test_positions_count_from_the_first_token_after_the_image():
    """Tokens before the image (a system prompt) are identical across samples; after it they carry h_v."""
    from analysis.mi.by_position import mi_by_position
    from analysis.mi.states import SampleStates

    rng = np.random.default_rng(0)
    states = []
    for i in range(300):
        h_v = rng.normal(size=2)
        prompt = np.ones((3, 2))  # the same 3 tokens before the image in every sample
        after = np.stack(
            [h_v + 0.3 * rng.normal(size=2), rng.normal(size=2)]
        )  # t=1 depends on h_v, t=2 does not
        e_t = np.concatenate([prompt, after])
        states.append(SampleStates(i, h_v, e_t, e_t, np.zeros(5, bool), before_image=3))
    table = mi_by_position(states, targets=("e_t",), methods=("ksg",), min_samples=20)
    mi = table.set_index("position")["mi"]
    assert mi[1] > 0.8 and abs(mi[2]) < 0.1 and len(mi) == 2
    everything = mi_by_position(states, targets=("e_t",), methods=("gaussian",), positions="all")
    assert (
        everything["skipped"].iloc[0] != "" and len(everything) == 5
    )  # constant prompt token: a counted skip

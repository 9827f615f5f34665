"""REINFORCE by named parts: the algorithm table held to the numbers of the code before it, each
algorithm's loss against finite differences, TRL's normalize_advantages, the settings defined once
(RLConfig -> flags, RLSettings, the state reader), the shared update tail."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import minillm
from minillm.data import EncodedDataset, Example
from minillm.evaluation.rewards import Reward
from minillm.optim import AdamW
from minillm.testing import assert_gradients
from minillm.training.rl import RLConfig, rl_step


class _Tok:
    eos_token_id = 1

    def decode(self, ids):
        return " ".join(str(int(i)) for i in ids)


def _tiny(dtype):
    config = minillm.T5Config(vocab_size=9, d_model=8, d_kv=4, num_heads=2, d_ff=12, num_layers=1,
                              num_decoder_layers=1, feed_forward_proj="gated-gelu",
                              tie_word_embeddings=False, dropout_rate=0.0,
                              relative_attention_num_buckets=4, relative_attention_max_distance=8)
    return minillm.T5.init(config, np.random.default_rng(0), dtype=dtype)


def _reward(ex, out):
    toks = out.split()
    return 0.25 * toks.count("3") + 0.1 * len(toks) - 0.05 * toks.count("5") + 0.01 * len(ex.prompt)


def _three_steps(dtype, **settings):
    """Three rl_steps of 2 micro-batches x 2 prompts x k 3 on a tiny model (the reference its start);
    (the weighted checksum sum_p p * w_p of the final parameters, the last step's figures)."""
    policy, reference = _tiny(dtype), _tiny(dtype)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(2, 9, size=int(rng.integers(2, 6))) for _ in range(6)]
    examples = [Example("p" * (i + 1), "") for i in range(6)]
    enc = EncodedDataset(prompts, [np.array([1])] * 6, 0)
    cfg = RLConfig(batch_size=2, k=3, lr=3e-2, warmup_steps=1, max_new_tokens=4, steps=3,
                   schedule="cosine", weight_decay=0.01, max_grad_norm=0.5, seed=7, **settings)
    opt = AdamW(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    ema = None
    for step in range(3):
        micro = [np.array([(2 * step) % 6, (2 * step + 1) % 6]),
                 np.array([(2 * step + 3) % 6, (2 * step + 4) % 6])]
        stats, ema = rl_step(policy, reference, opt, _Tok(), Reward("r", _reward), examples, enc,
                             micro, step, cfg, ema=ema)
    w = np.random.default_rng(123)
    checksum = sum(float((policy.params[k].astype(np.float64) * w.standard_normal(policy.params[k].shape))
                         .sum()) for k in sorted(policy.params))
    return checksum, stats


# Produced by commit 8e613ec (main before the algorithm table: rl_step's tuples and column tables)
# with this very setup: (checksum, last loss, last grad_norm, last clip_frac). On the machine that
# wrote the table, the refactored code gave the same parameters bit for bit (the sha256 of their
# bytes, first 16 hex digits, after each name) and the same figures of every step; the tolerance
# leaves room only for another BLAS's last bits.
BEFORE = {
    "rloo": ({"kl_coef": 0.1, "entropy_coef": 0.05},  # 73fdc62f9076623c
             (-5.9684779095061575, -0.19203373406245614, 5.996678522963083, 0.0)),
    "rloo_ema": ({"baseline": "ema", "kl_coef": 0.2},  # 54e230d3454cf606
                 (-5.635694722338245, 0.155984734000976, 1.5966167409239813, 0.0)),
    "rloo_none": ({"baseline": "none", "kl_coef": 0.0, "entropy_coef": 0.1},  # 8282a477477fcb9b
                  (-5.791298919801617, 0.28850261365035057, 0.5552386871581493, 0.0)),
    "rloo_mu3": ({"num_iterations": 3, "epsilon": 0.05, "epsilon_high": 0.1, "kl_coef": 0.1},
                 (-6.147480404741914, -0.011889387722800676, 1.0262385516798944,
                  0.3333333333333333)),  # a42b85c927b04775
    "grpo_group_grpo": ({"algo": "grpo", "loss_type": "grpo", "scale_rewards": "group", "beta": 0.04},
                        (-3.7569170438482633, 0.043598702863407925, 0.9158004756927807, 0.0)),
    # 646255b8790c23d3
    "grpo_batch_drgrpo_mu2": ({"algo": "grpo", "loss_type": "dr_grpo", "scale_rewards": "batch",
                               "beta": 0.1, "num_iterations": 2, "epsilon": 0.05},
                              (-8.418372832411816, 0.13872316121043787, 0.6360321535684337,
                               0.2222222222222222)),  # 5b54a3f03d1e8638
    "grpo_none_dapo_mu2": ({"algo": "grpo", "loss_type": "dapo", "scale_rewards": "none", "beta": 0.0,
                            "num_iterations": 2, "entropy_coef": 0.1, "epsilon": 0.05,
                            "epsilon_high": 0.08},
                           (-9.091023030089529, -0.12105087394391513, 0.422129729307857,
                            0.30851063829787234)),  # b1fcbefe135dc90b
    "grpo_group_dapo_mu3": ({"algo": "grpo", "loss_type": "dapo", "scale_rewards": "group",
                             "beta": 0.3, "num_iterations": 3, "epsilon": 0.05},
                            (-10.646328050254834, 0.44651237748464245, 1.65196792573154,
                             0.30833333333333335)),  # fff55127d984ae64
    "grpo_batch_grpo": ({"algo": "grpo", "loss_type": "grpo", "scale_rewards": "batch", "beta": 0.0},
                        (-4.888653394354238, 1.6132928326584306e-16, 0.2245544311262871, 0.0)),
    # aa1427755b78057b
}
BEFORE_F32 = {  # float32 parameters (the CLI's default dtype)
    "rloo_f32": ({"kl_coef": 0.1},  # 8021b6dcc5eb8729
                 (-6.5032618871943235, -0.016261219047009945, 0.850651274093235, 0.0)),
    "grpo_f32_mu2": ({"algo": "grpo", "num_iterations": 2, "epsilon": 0.05},  # 160ed6c7f328d27a
                     (-6.597095991578506, -0.07936618477106094, 1.3282012926440734,
                      0.20588235294117646)),
}


@pytest.mark.parametrize("name", list(BEFORE) + list(BEFORE_F32))
def test_every_algorithm_takes_the_steps_the_code_before_the_table_took(name):
    settings, (checksum, loss, norm, clip) = {**BEFORE, **BEFORE_F32}[name]
    rtol = 1e-9 if name in BEFORE else 1e-5
    got, stats = _three_steps("float32" if name in BEFORE_F32 else "float64", **settings)
    assert got == pytest.approx(checksum, rel=rtol)
    assert stats["loss"] == pytest.approx(loss, rel=rtol, abs=1e-12)
    assert stats["grad_norm"] == pytest.approx(norm, rel=rtol)
    assert stats["clip_frac"] == pytest.approx(clip, rel=rtol, abs=1e-12)


def test_the_table_picks_each_algorithm_by_algo_and_num_iterations():
    from minillm.training.algorithms import ALGORITHMS, ALGOS, CLIPPED_RLOO, GRPO, RLOO, algorithm_for

    assert ALGOS == ("rloo", "grpo") and set(ALGORITHMS) == set(ALGOS)
    assert algorithm_for(RLConfig()) is RLOO
    assert algorithm_for(RLConfig(num_iterations=2)) is CLIPPED_RLOO
    assert algorithm_for(RLConfig(algo="grpo")) is GRPO
    assert algorithm_for(RLConfig(algo="grpo", num_iterations=3)) is GRPO


# ---------------------------------------------------------------- each loss against finite differences


@pytest.mark.parametrize("algo,settings", [
    ("rloo", {}), ("rloo_clipped", {"epsilon": 0.1, "epsilon_high": 0.3}),
    ("grpo", {"loss_type": "grpo", "beta": 0.3}), ("grpo", {"loss_type": "dr_grpo", "beta": 0.0}),
    ("grpo", {"loss_type": "dapo", "beta": 0.7, "epsilon_high": 0.28})])
def test_each_loss_gives_its_gradient_in_log_pi(algo, settings):
    """d loss / d log pi(y_t) of a micro-batch that is a part of a larger step, float64, a random
    upstream gradient, against finite differences over the sampled tokens."""
    from minillm.training.algorithms import CLIPPED_RLOO, GRPO, RLOO
    from minillm.training.rollout import Rollout, StepSize

    rng = np.random.default_rng(3)
    N, L = 6, 5
    labels = rng.integers(2, 9, size=(N, L))
    for i, n in enumerate([5, 2, 3, 1, 4, 5]):
        labels[i, n:] = -100
    valid = labels != -100
    logp_old = np.where(valid, np.log(rng.uniform(0.05, 0.9, size=(N, L))), 0.0)
    ref = np.where(valid, logp_old + rng.normal(0, 0.4, size=(N, L)), 0.0)
    logp = np.where(valid, logp_old + rng.uniform(-0.5, 0.5, size=(N, L)), 0.0)  # rho != 1
    adv = rng.standard_normal(N)
    algorithm = {"rloo": RLOO, "rloo_clipped": CLIPPED_RLOO, "grpo": GRPO}[algo]
    cfg = RLConfig(algo="grpo" if algo == "grpo" else "rloo", k=3, max_new_tokens=L, **settings)
    part = Rollout(slice(0, N), None, None, labels, logp_old, ref, int(valid.sum()))
    size = StepSize(2 * N, 2.0 * valid.sum() + 3)  # the step holds other micro-batches too
    if algo != "rloo":
        assert 0 < algorithm.loss(logp, part, adv, cfg, size).ratios.clipped  # both branches

    def forward(x, params):
        out = algorithm.loss(np.where(valid, x, 0.0), part, adv, cfg, size)
        return np.asarray(out.value), out

    def backward(dout, out):
        return dout * np.where(valid, out.dlogp, 0.0), {}

    assert_gradients(forward, backward, (logp,), {}, rng, max_entries=logp.size)


# ---------------------------------------------------------------- TRL's normalize_advantages


def test_normalize_advantages_is_trls_sample_std_plus_1e_4():
    """TRL's RLOOTrainer: (A - mean) / (A.std() + 1e-4), torch's std (n - 1). [1, 0, 0]: mean 1/3,
    sample std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = 1/sqrt(3)."""
    from minillm.training.algorithms import rloo_advantages
    from minillm.training.reinforce import compute_advantages, normalize_advantages
    from minillm.training.rollout import SequenceFigures

    want = np.array([2 / 3, -1 / 3, -1 / 3]) / (1 / np.sqrt(3) + 1e-4)
    np.testing.assert_allclose(normalize_advantages(np.array([1.0, 0.0, 0.0])), want, rtol=1e-14)
    np.testing.assert_allclose(want, [1.155, -0.577, -0.577], atol=1e-3)  # TRL's, not [1.414, -0.707, ..]
    adv, _ = compute_advantages(np.array([[1.0, 0.0, 0.0]]), "none", normalize=True)
    np.testing.assert_allclose(adv, want[None], rtol=1e-14)
    # through the table: over the whole step (every group), after the leave-one-out baseline
    r = np.array([1.0, 0.0, 0.0, 0.5, 0.5, 1.0])
    loo = r - (np.repeat(r.reshape(2, 3).sum(1), 3) - r) / 2  # r - the mean of the other two
    figures = SequenceFigures(r, np.zeros(6), np.ones(6), np.zeros(6))
    cfg = RLConfig(k=3, kl_coef=0.0, normalize_advantages=True)
    adv, _ = rloo_advantages(figures, cfg, None)
    np.testing.assert_allclose(adv, (loo - loo.mean()) / (loo.std(ddof=1) + 1e-4), rtol=1e-13)
    assert normalize_advantages(np.array([0.7])) == 0.0  # one advantage: no spread, no nan


def test_whiten_is_an_alias_of_normalize_advantages(capsys):
    from minillm.cli import build_parser

    for flag in ("--whiten", "--normalize-advantages"):
        args = build_parser().parse_args(["rl", "d", flag])
        assert args.normalize_advantages is True and not hasattr(args, "whiten")
    assert build_parser().parse_args(["rl", "d"]).normalize_advantages is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rl", "--help"])
    assert "--normalize-advantages, --whiten" in capsys.readouterr().out


# ---------------------------------------------------------------- the settings, defined once

# RLConfig's fields and defaults as they were before the table (commit 8e613ec; whiten is now
# normalize_advantages): a run's settings and its trainer_state.json keep their names and defaults.
DEFAULTS = dict(
    steps=200, batch_size=16, grad_accum=1, k=8, lr=3e-4, warmup_steps=10, schedule="constant",
    min_lr_ratio=0.0, decay_fraction=0.25, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8, max_grad_norm=1.0,
    baseline="rloo", ema_decay=0.9, normalize_advantages=False, kl_coef=0.1, entropy_coef=0.0,
    algo="rloo", num_iterations=1, epsilon=0.2, epsilon_high=None, beta=0.04,
    scale_rewards="group", loss_type="dapo", temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=32,
    seed=0, eval_every=50, save_every=None, eval_batch_size=150, log_every=1)
NO_FLAG = {"min_lr_ratio", "decay_fraction", "betas", "eps", "eval_batch_size", "log_every"}


def test_rl_config_keeps_its_fields_and_defaults():
    assert {f.name: f.default for f in dataclasses.fields(RLConfig)} == DEFAULTS
    for f in dataclasses.fields(RLConfig):
        assert f.metadata["help"] and callable(f.metadata["check"]), f.name
    assert RLConfig.from_dict(RLConfig().to_dict()) == RLConfig()


def test_flags_and_rl_settings_are_made_from_rl_config():
    import argparse

    from minillm.cli import build_parser
    from minillm.training.rl_config import flag_settings
    from minillm.workflows import RLSettings
    from minillm.workflows.rl_settings import ALGO_FIELDS, RunSettings

    flagged = [f.name for f in flag_settings()]
    assert set(flagged) == set(DEFAULTS) - NO_FLAG
    parser = next(a for a in build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction)).choices["rl"]
    group = next(g for g in parser._action_groups if g.title.startswith("REINFORCE"))
    actions = [a for a in group._group_actions if a.dest not in ("stop_after", "no_progress")]
    assert [a.dest for a in actions] == flagged  # in RLConfig's order
    for a in actions:
        field = next(f for f in flag_settings() if f.name == a.dest)
        assert a.option_strings[0] == "--" + a.dest.replace("_", "-") and a.default is None
        assert a.help.startswith(field.metadata["help"])
        if field.metadata["shown"] is None:
            assert a.help.endswith(f"[{DEFAULTS[a.dest]}]"), a.help
        assert a.choices == field.metadata["choices"]
    fields = [f.name for f in dataclasses.fields(RLSettings)]
    assert fields == [f.name for f in dataclasses.fields(RunSettings)] + flagged
    assert all(RLSettings().__getattribute__(n) is None for n in flagged)
    assert ALGO_FIELDS == {"rloo": ("baseline", "ema_decay", "normalize_advantages", "kl_coef"),
                           "grpo": ("beta", "scale_rewards", "loss_type")}


def test_a_version_4_rl_state_is_refused_in_one_line():
    from minillm.runfolder import checkpoint as ckpt
    from minillm.runfolder.state_file import StateError, check_state

    state = {"format": ckpt.STATE_FORMAT, "kind": "rl", "version": 4}
    with pytest.raises(StateError, match=r"^x/trainer_state.json: trainer state version 4, this "
                       r"minillm reads 5 for an rl run$"):
        check_state("x/trainer_state.json", state, ckpt.STATE_FORMAT, ckpt.STATE_VERSIONS)


# ---------------------------------------------------------------- the update tail, SFT's and RL's


class _Recorder:
    def __init__(self):
        self.calls = []

    def step(self, params, grads, lr=None):
        self.calls.append(({k: v.copy() for k, v in grads.items()}, lr))
        return params

    def state_dict(self):
        return {"t": 0, "arrays": {}}


def test_apply_update_clips_by_the_global_norm_then_steps():
    from minillm.training.update import apply_update

    rng = np.random.default_rng(0)
    g = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    norm = np.sqrt(sum((v ** 2).sum() for v in g.values()))
    opt = _Recorder()
    got = apply_update({"a": np.zeros((3, 4)), "b": np.zeros(5)}, {k: v.copy() for k, v in g.items()},
                       opt, 1.5, 0.01, 0.5, "step 1")
    assert got == pytest.approx(norm, rel=1e-14) and norm > 0.5
    (clipped, lr), = opt.calls
    assert lr == 0.01
    for k, v in g.items():  # torch's clip_grad_norm_: g * max_norm / (norm + 1e-6)
        np.testing.assert_allclose(clipped[k], v * 0.5 / (norm + 1e-6), rtol=1e-14)


@pytest.mark.parametrize("loss,grad,words", [
    (float("nan"), 1.0, "step 3 (update 2 of 2): the loss is nan (not finite)"),
    (1.0, float("inf"), "step 3 (update 2 of 2): the gradient norm is inf (not finite)")])
def test_apply_update_stops_before_the_step_on_a_non_finite_loss_or_gradient(loss, grad, words):
    from minillm.training.update import TrainingDiverged, apply_update

    opt = _Recorder()
    with pytest.raises(TrainingDiverged, match=r"^" + re.escape(words) + "$"):
        apply_update({"a": np.zeros(2)}, {"a": np.array([grad, 0.0])}, opt, loss, 0.1, 1.0,
                     "step 3 (update 2 of 2)")
    assert opt.calls == []


def test_sft_and_rl_take_the_same_update_tail():
    """One function for both: neither trainer keeps its own clip or finite check."""
    import inspect

    from minillm.training import rl, sft

    for module in (rl, sft):
        source = inspect.getsource(module)
        assert "apply_update(" in source and "clip_grad_norm" not in source, module.__name__

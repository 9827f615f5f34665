"""REINFORCE: the surrogate's gradient, the estimator's mean against the exact gradient of the
expected reward (enumerated outputs), advantages, the trainer loop, resume, and the CLI."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

import minillm
from minillm.data import EncodedDataset, Example
from minillm.evaluation import policy_kl, sampled_labels, token_logprobs
from minillm.evaluation.rewards import Reward, RewardError
from minillm.ops import entropy_forward
from minillm.optim import AdamW
from minillm.runfolder import checkpoint as ckpt
from minillm.testing import check_gradients
from minillm.training.reinforce import compute_advantages, reinforce_loss_and_grads, rloo_baseline
from minillm.training.rl import RLConfig, rl_step
from tests.conftest import cuda_available, start_folder


def tiny_model(vocab=11, dtype="float64", seed=0, ff="relu", tied=True, d_model=8):
    config = minillm.T5Config(vocab_size=vocab, d_model=d_model, d_kv=4, num_heads=2, d_ff=12,
                              num_layers=1, num_decoder_layers=1, feed_forward_proj=ff,
                              tie_word_embeddings=tied, dropout_rate=0.0,
                              relative_attention_num_buckets=4, relative_attention_max_distance=8)
    return minillm.T5.init(config, np.random.default_rng(seed), dtype=dtype)


def random_outputs(rng, N, L, V, eos=1):
    """labels (N, L): random tokens, cut after a random </s> in some rows."""
    labels = rng.integers(2, V, size=(N, L))
    for i in range(N):
        if rng.random() < 0.7:
            t = int(rng.integers(L))
            labels[i, t] = eos
            labels[i, t + 1:] = -100
    return labels


# ---------------------------------------------------------------- pieces


def test_sampled_labels_cut_after_the_first_eos():
    ids = np.array([[0, 5, 1, 0, 0], [0, 4, 4, 4, 4], [0, 1, 0, 0, 0], [0, 3, 1, 1, 0]])
    np.testing.assert_array_equal(sampled_labels(ids, 1), [[5, 1, -100, -100], [4, 4, 4, 4],
                                                           [1, -100, -100, -100],
                                                           [3, 1, -100, -100]])


def test_samples_follow_the_sampling_stream_of_the_seed():
    """The same seed draws the same k samples per prompt; another seed draws others."""
    from minillm import seeds
    from minillm.evaluation import sample_outputs

    model = tiny_model(vocab=11, seed=5)
    ids = np.random.default_rng(0).integers(2, 11, size=(3, 5))
    draw = lambda seed: sample_outputs(model, ids, None, 4, seeds.generator(seed, "sampling"), 6)
    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape[0] == 12
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_advantages():
    r = np.array([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    b = rloo_baseline(r)
    np.testing.assert_allclose(b[0], [1 / 3, 2 / 3, 2 / 3, 1 / 3])
    adv, ema = compute_advantages(r, "rloo")
    np.testing.assert_allclose(adv[0], [2 / 3, -2 / 3, -2 / 3, 2 / 3])
    np.testing.assert_allclose(adv[1], 0)
    assert ema is None
    adv, ema = compute_advantages(r, "none")
    np.testing.assert_allclose(adv, r)
    adv, ema = compute_advantages(r, "ema", None, 0.9)  # the first batch uses its own mean
    np.testing.assert_allclose(adv, r - 0.5)
    assert ema == pytest.approx(0.5)
    adv, ema2 = compute_advantages(r + 1, "ema", ema, 0.9)
    np.testing.assert_allclose(adv, r + 0.5)
    assert ema2 == pytest.approx(0.9 * 0.5 + 0.1 * 1.5)
    adv, _ = compute_advantages(r, "rloo", normalize=True)
    assert abs(adv.mean()) < 1e-12 and adv.std(ddof=1) == pytest.approx(1, rel=1e-3)
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_baseline(r[:, :1])
    with pytest.raises(ValueError, match="k >= 2"):
        RLConfig(k=1)


# ---------------------------------------------------------------- the surrogate's gradient


@pytest.mark.parametrize("ff,tied,entropy_coef", [("relu", True, 0.0), ("gated-gelu", False, 0.3)])
def test_surrogate_gradient_matches_finite_differences(ff, tied, entropy_coef):
    """d/dtheta of loss = -(1/N) sum_i A_i log pi(y_i) - c mean H, through the whole model, float64."""
    rng = np.random.default_rng(1)
    model = tiny_model(ff=ff, tied=tied)
    N, S, L, V = 4, 5, 4, model.config.vocab_size
    input_ids = rng.integers(2, V, size=(N, S))
    mask = np.ones((N, S), dtype=np.int64)
    mask[0, 3:] = 0
    labels = random_outputs(rng, N, L, V)
    adv = rng.standard_normal(N)

    _, analytic, _ = reinforce_loss_and_grads(model, input_ids, labels, adv, mask, entropy_coef)

    def forward(params):
        """The surrogate, computed independently of reinforce_backward."""
        m = minillm.T5(model.config, params)
        logp = token_logprobs(m, input_ids, labels, mask).sum(1)  # (N,) log pi(y_i)
        H, _ = entropy_forward(m.logits(input_ids, m.shift_right(labels), mask).reshape(N * L, V))
        valid = (labels != -100).reshape(-1)
        return np.asarray(-(adv * logp).mean() - entropy_coef * H[valid].mean()), None

    def backward(dout, _):
        return (), {k: v * float(dout) for k, v in analytic.items()}

    errors = check_gradients(forward, backward, (), model.params, rng, max_entries=12)
    assert len(errors) == len(model.params)
    assert max(errors.values()) < 1e-6, errors


def test_surrogate_gradient_is_the_advantage_weighted_sum_of_logprob_gradients():
    """grad loss = -(1/N) sum_i A_i grad log pi(y_i | x_i); each grad log pi from the SFT path."""
    rng = np.random.default_rng(2)
    model = tiny_model()
    N, S, L, V = 5, 4, 3, model.config.vocab_size
    input_ids = rng.integers(2, V, size=(N, S))
    labels = random_outputs(rng, N, L, V)
    adv = rng.standard_normal(N)
    loss, grads, _ = reinforce_loss_and_grads(model, input_ids, labels, adv)
    logp = token_logprobs(model, input_ids, labels).sum(1)
    assert loss == pytest.approx(-(adv * logp).sum() / N, rel=1e-12)
    want = {k: np.zeros_like(v) for k, v in model.params.items()}
    for i in range(N):
        n_tok = int((labels[i] != -100).sum())
        # SFT's loss is the mean token NLL = -log pi(y_i) / n_tok
        _, g = model.loss_and_grads(input_ids[i:i + 1], labels[i:i + 1])
        for k in want:
            want[k] += -adv[i] / N * (-n_tok * g[k])
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-9, atol=1e-13, err_msg=k)


# ---------------------------------------------------------------- unbiasedness, by enumeration


class _Recorder:
    """An optimizer stand-in that keeps the gradient rl_step hands it."""

    def step(self, params, grads, lr=None):
        self.grads = {k: v.copy() for k, v in grads.items()}
        return params

    def state_dict(self):  # no moments (rl_step checks an optimizer's moments after the update)
        return {"t": 0, "arrays": {}}


class _IdsTokenizer:
    eos_token_id = 1

    def decode(self, ids):
        return " ".join(str(int(i)) for i in ids)


def _all_outputs(V, L, eos=1):
    """Every output of at most L tokens (cut at </s>), as labels rows (M, L)."""
    rows = []
    for n in range(1, L + 1):
        for seq in itertools.product(range(V), repeat=n):
            if eos in seq[:-1] or (n < L and seq[-1] != eos):
                continue
            rows.append(list(seq) + [-100] * (L - n))
    return np.array(rows)


@pytest.mark.parametrize("baseline,kl_coef", [("rloo", 0.5), ("none", 0.0)])
def test_estimator_mean_approaches_the_exact_gradient(baseline, kl_coef):
    """Vocab 4, at most 2 new tokens: 13 outputs. The exact gradient of
    E_pi[R] - kl_coef KL(pi || pi_ref) is sum_y pi(y) (R(y) - kl_coef log(pi(y)/pi_ref(y))) grad log pi(y);
    the mean of rl_step's gradient over many sampled batches must approach it."""
    V, L, k = 4, 2, 4
    policy = tiny_model(vocab=V, seed=3, d_model=8)
    reference = tiny_model(vocab=V, seed=4, d_model=8)
    prompts = [np.array([2, 3, 1]), np.array([3, 1])]
    outputs = _all_outputs(V, L)
    assert len(outputs) == 1 + 3 * 4
    # the decoded text drops </s>: "" (y = </s>), "a" (a </s>) or "a b" (cut at 2 tokens)
    texts = [" ".join(str(t) for t in row if t not in (-100, 1)) for row in outputs]
    table = dict(zip(texts, np.random.default_rng(5).random(len(outputs)), strict=True))
    assert len(table) == len(outputs)
    tok = _IdsTokenizer()
    reward = Reward("table", lambda ex, out: table[out])

    # the exact gradient, prompt by prompt, from the SFT path's per-sequence gradients
    exact = {k_: np.zeros_like(v) for k_, v in policy.params.items()}
    for x in prompts:
        xs = np.repeat(x[None], len(outputs), axis=0)
        logp = token_logprobs(policy, xs, outputs).sum(1)
        ref_logp = token_logprobs(reference, xs, outputs).sum(1)
        pi = np.exp(logp)
        assert pi.sum() == pytest.approx(1.0, abs=1e-12)
        for m, row in enumerate(outputs):
            shaped = table[texts[m]] - kl_coef * (logp[m] - ref_logp[m])
            n_tok = int((row != -100).sum())
            _, g = policy.loss_and_grads(x[None], row[None])
            for k_ in exact:  # grad log pi(y) = -n_tok * grad(mean NLL)
                exact[k_] += pi[m] * shaped * (-n_tok * g[k_]) / len(prompts)

    copies = 40  # prompts per batch: each prompt 20 times -> 40 independent groups of k samples
    examples = [Example(f"p{i}", "") for i in range(len(prompts))]
    enc = EncodedDataset([p for p in prompts], [np.array([1])] * 2, 0)
    indices = np.array([0, 1] * (copies // 2))
    config = RLConfig(batch_size=copies, k=k, baseline=baseline, kl_coef=kl_coef, lr=1e-3,
                      warmup_steps=0, max_grad_norm=1e12, max_new_tokens=L)
    rng = np.random.default_rng(6)
    draws = []
    for step in range(150):
        rec = _Recorder()
        rl_step(policy, reference, rec, tok, reward, examples, enc, indices, step, config, rng)
        draws.append(np.concatenate([-rec.grads[k_].ravel() for k_ in exact]))  # ascent direction
    draws = np.array(draws)  # (M, P)
    want = np.concatenate([v.ravel() for v in exact.values()])
    mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    live = se > 1e-12
    z = np.abs(mean - want)[live] / se[live]
    assert z.max() < 5.0, f"max z-score {z.max():.2f}"
    np.testing.assert_allclose(mean[~live], want[~live], atol=1e-9)
    # and the check has power: the estimate is far closer to the truth than the truth is to 0
    assert np.linalg.norm(mean - want) < 0.15 * np.linalg.norm(want)


def test_reference_logprobs_encode_each_prompt_once():
    rng = np.random.default_rng(7)
    model = tiny_model()
    B, k, S, L, V = 2, 3, 5, 4, model.config.vocab_size
    input_ids = rng.integers(2, V, size=(B, S))
    mask = np.ones((B, S), dtype=np.int64)
    mask[1, 4:] = 0
    labels = random_outputs(rng, B * k, L, V)
    once = token_logprobs(model, input_ids, labels, mask, repeats=k)
    rep = token_logprobs(model, np.repeat(input_ids, k, 0), labels, np.repeat(mask, k, 0))
    np.testing.assert_allclose(once, rep, rtol=1e-12, atol=1e-14)
    assert (once[labels == -100] == 0).all()


@pytest.mark.parametrize("ff,entropy_coef", [("relu", 0.0), ("gated-gelu", 0.2)])
def test_surrogate_encodes_each_prompt_once(ff, entropy_coef):
    """repeats=k (prompt encoded once, memory gradient summed over its k samples) == k copies of it."""
    rng = np.random.default_rng(9)
    model = tiny_model(ff=ff, tied=ff == "relu")
    B, k, S, L, V = 3, 4, 5, 4, model.config.vocab_size
    input_ids = rng.integers(2, V, size=(B, S))
    mask = np.ones((B, S), dtype=np.int64)
    mask[2, 3:] = 0
    labels = random_outputs(rng, B * k, L, V)
    adv = rng.standard_normal(B * k)
    once = reinforce_loss_and_grads(model, input_ids, labels, adv, mask, entropy_coef, repeats=k)
    rep = reinforce_loss_and_grads(model, np.repeat(input_ids, k, 0), labels, adv, np.repeat(mask, k, 0),
                                   entropy_coef)
    assert once[0] == pytest.approx(rep[0], rel=1e-12) and once[2] == pytest.approx(rep[2], rel=1e-12)
    assert set(once[1]) == set(rep[1]) == set(model.params)
    for name, g in rep[1].items():
        np.testing.assert_allclose(once[1][name], g, rtol=1e-10, atol=1e-14, err_msg=name)
    assert np.abs(once[1]["encoder.block.0.layer.0.SelfAttention.q.weight"]).max() > 1e-6  # not vacuous
    with pytest.raises(ValueError, match="decoder_input_ids has 12 rows; expected input_ids' 3 rows"):
        reinforce_loss_and_grads(model, input_ids, labels, adv, mask, repeats=3)


def test_policy_kl_is_zero_against_itself_and_positive_otherwise():
    rng = np.random.default_rng(8)
    a, b = tiny_model(seed=0), tiny_model(seed=1)
    input_ids = rng.integers(2, 11, size=(3, 4))
    labels = random_outputs(rng, 3, 3, 11)
    np.testing.assert_allclose(policy_kl(a, a, input_ids, labels), 0, atol=1e-12)
    assert (policy_kl(a, b, input_ids, labels) > 0).all()


# ---------------------------------------------------------------- the loop and the CLI


TASKS = ["reverse_words", "uppercase"]


@pytest.fixture(scope="module")
def start_dir(tmp_path_factory):
    """A small starting model folder (random weights) with a tokenizer for two built-in tasks."""
    return start_folder(tmp_path_factory.mktemp("start") / "sft", TASKS)


QUICK = ["--tasks", ",".join(TASKS), "--steps", "4", "--batch-size", "3", "--k", "2", "--n-train", "12",
         "--n-eval", "4", "--max-new-tokens", "5", "--eval-every", "2", "--no-progress",
         "--lr", "1e-3", "--warmup-steps", "0"]


def _weights(folder):
    with open(os.path.join(folder, "model.safetensors"), "rb") as f:
        return f.read()


def _train_records(folder):
    from minillm.runfolder.metrics import read_metrics

    return [{k: v for k, v in r.items() if not k.endswith("_s")}
            for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if r["kind"] != "initial_eval"]


def test_cli_run_folder_and_bit_for_bit_resume(start_dir, tmp_path, capsys):
    from minillm.cli import main

    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["rl", str(start_dir), "--out", str(full), *QUICK]) == 0
    out = capsys.readouterr().out
    assert "held-out evaluation at step 0" in out and "held-out evaluation at step 4" in out
    state = ckpt.read_state(full)
    assert state["kind"] == "rl" and state["step"] == 4 and state["rl_config"]["k"] == 2
    assert minillm.from_pretrained(full / "reference").config.d_model == 16
    assert minillm.from_pretrained(full / "best").config.d_model == 16
    recs = _train_records(full)
    train = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for key in ("reward", "kl", "entropy", "adv_mean", "adv_std", "adv_abs_max", "grad_norm", "lr"):
        assert all(np.isfinite(r[key]) for r in train), key
    assert {r["kind"] for r in recs} == {"train", "eval", "final_eval"}
    # the reference is the starting model: the KL starts at 0
    assert train[0]["kl"] == pytest.approx(0, abs=1e-4)

    # --device cpu said explicitly is the default run, bit for bit
    assert main(["rl", str(start_dir), "--out", str(part), *QUICK, "--stop-after", "2",
                 "--device", "cpu"]) == 0
    assert ckpt.read_state(part)["step"] == 2 and "device" not in ckpt.read_state(part)["rl_config"]
    assert main(["rl", "--out", str(part), "--resume", "--no-progress", "--device", "cpu"]) == 0
    assert _weights(full) == _weights(part)
    assert _train_records(full) == _train_records(part)


@pytest.mark.skipif(cuda_available(), reason="CuPy and a GPU are available here")
def test_cli_device_cuda_without_cupy_is_one_line_and_touches_nothing(start_dir, tmp_path, capsys):
    import shutil

    from minillm.cli import main
    from tests.conftest import folder_digest

    new, old = tmp_path / "new", tmp_path / "old"
    shutil.copytree(start_dir, old)
    before = folder_digest(old)
    for args in ([str(start_dir), "--out", str(new)], [str(start_dir), "--out", str(old), "--overwrite"],
                 ["--out", str(old), "--resume"]):
        assert main(["rl", *args, *QUICK, "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("minillm rl: error: "), err
        assert "CuPy" in err[0] and "gpu extra" in err[0], err[0]
    assert not new.exists()
    assert folder_digest(old) == before


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a GPU")
def test_cli_on_cuda_matches_cpu_and_resumes_across_devices(start_dir, tmp_path):
    """A cpu run against one whose steps 1-2 ran on cuda and 3-4 resumed on the cpu."""
    from minillm.cli import main

    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["rl", str(start_dir), "--out", str(a), *QUICK, "--device", "cpu"]) == 0
    assert main(["rl", str(start_dir), "--out", str(b), *QUICK, "--device", "cuda",
                 "--stop-after", "2"]) == 0
    assert main(["rl", "--out", str(b), "--resume", "--no-progress", "--device", "cpu"]) == 0
    ra = [r for r in _train_records(a) if r["kind"] == "train"]
    rb = [r for r in _train_records(b) if r["kind"] == "train"]
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [1, 2, 3, 4]
    for x, y in zip(ra, rb, strict=True):
        assert y["reward"] == x["reward"], (x, y)  # the same samples
        for key in ("entropy", "grad_norm"):
            assert y[key] == pytest.approx(x[key], rel=1e-4), (key, x, y)
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4, abs=1e-6), (x, y)


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_cli_errors_exit_nonzero_with_one_line(start_dir, tmp_path, capsys, monkeypatch):
    from minillm.cli import main

    out = str(tmp_path / "o")
    assert main(["rl", str(tmp_path / "missing"), "--out", out]) == 2
    assert "not a folder" in _err(capsys)
    assert main(["rl", "--out", out]) == 2
    assert "DIR" in _err(capsys)
    assert main(["rl", str(start_dir), "--out", out, *QUICK, "--reward", "nosuch"]) == 2
    assert "unknown reward" in _err(capsys)
    assert main(["rl", str(start_dir), "--out", out, *QUICK, "--k", "1"]) == 2
    assert "k >= 2" in _err(capsys)
    assert main(["rl", str(start_dir), "--out", out, *QUICK, "--tasks", "nosuch"]) == 2
    assert "unknown task" in _err(capsys)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "say hi", "completion": "hi", "task": "mine"}) + "\n")
    assert main(["rl", str(start_dir), "--out", out, "--data", str(data)]) == 2
    assert "--reward is required" in _err(capsys)
    assert main(["rl", str(start_dir), "--out", out, "--data", str(data), "--reward", "verify"]) == 2
    assert "built-in tasks only" in _err(capsys)
    assert main(["rl", "--out", out, "--resume"]) == 2
    assert "no checkpoint" in _err(capsys)
    assert not os.path.exists(os.path.join(out, "trainer_state.json"))

    # a reward that fails is reported with the sample, and the run folder keeps its step-0 checkpoint
    (tmp_path / "failing.py").write_text("def score(prompt, output, reference):\n"
                                         "    raise RuntimeError('reward server down')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["rl", str(start_dir), "--out", out, *QUICK, "--reward", "failing:score",
                 "--eval-every", "0", "--n-eval", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "reward server down" in err and "prompt" in err and "output" in err


def test_cli_subprocess_exit_status(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "minillm", "rl", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    assert "minillm rl: error:" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_rl_step_reports_a_failing_reward_before_updating():
    model = tiny_model(vocab=4, dtype="float32")
    before = {k: v.copy() for k, v in model.params.items()}
    bad = Reward("bad", lambda ex, out: float("nan"))
    enc = EncodedDataset([np.array([2, 3, 1])], [np.array([1])], 0)
    with pytest.raises(RewardError, match="not a finite number"):
        rl_step(model, model, AdamW(), _IdsTokenizer(), bad, [Example("p0", "")], enc,
                np.array([0]), 0, RLConfig(k=2, max_new_tokens=2), np.random.default_rng(0))
    assert all((model.params[k] == before[k]).all() for k in before)


def _run_example(tmp_path, *flags, timeout=600):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, os.path.join(root, "examples", "rl_experiment.py"),
                        "--out", str(tmp_path / "exp"), "--no-progress", *flags],
                       capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.slow
def test_rl_experiment_script_runs(tmp_path):
    out = _run_example(tmp_path, "--sft-steps", "3", "--steps", "2", "--k", "2", "--batch-size", "2",
                       "--n-eval", "4")
    assert "before" in out and "after" in out and "greedy reward" in out


@pytest.mark.slow
def test_rl_experiment_raises_held_out_reward_by_a_tenth(tmp_path):
    """THE EXPERIMENT: a weak SFT model, REINFORCE with the task's verifier, +0.10 held-out reward."""
    import re

    out = _run_example(tmp_path, timeout=1800)
    m = re.search(r"greedy reward ([\d.]+) -> ([\d.]+) .*KL to the SFT model ([\d.]+) nats", out)
    assert m, out
    before, after, kl = map(float, m.groups())
    assert after - before >= 0.10, out
    assert kl < 5.0, out


# ---------------------------------------------------------------- GRPO and clipped updates (grpo.py)


def test_group_advantages_are_trls():
    from minillm.training.grpo import group_advantages

    r = np.array([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0]])
    centred = r - r.mean(1, keepdims=True)
    group_std = np.sqrt(((r - r.mean(1, keepdims=True)) ** 2).sum(1, keepdims=True) / 3)  # n - 1
    np.testing.assert_allclose(group_advantages(r, "group"), centred / (group_std + 1e-4), rtol=1e-12)
    np.testing.assert_allclose(group_advantages(r, "group")[0],
                               np.array([0.5, -0.5, -0.5, 0.5]) / (np.sqrt(1 / 3) + 1e-4), rtol=1e-12)
    np.testing.assert_array_equal(group_advantages(r, "group")[1], 0)  # a tied group teaches nothing
    batch_std = np.sqrt(((r - r.mean()) ** 2).sum() / (r.size - 1))
    np.testing.assert_allclose(group_advantages(r, "batch"), centred / (batch_std + 1e-4), rtol=1e-12)
    np.testing.assert_allclose(group_advantages(r, "none"), centred, rtol=1e-12)
    with pytest.raises(ValueError, match="k >= 2"):
        group_advantages(r[:, :1])
    with pytest.raises(ValueError, match="scale_rewards must be one of group, batch, none"):
        group_advantages(r, "max")
    with pytest.raises(ValueError, match="grpo's group advantages need k >= 2"):
        RLConfig(algo="grpo", k=1, baseline="none")


def clipped_loss_and_grads(model, cache, old, ref, adv, cfg, n_seq=None, n_tokens=None):
    """The table's clipped algorithm of ``cfg.algo`` (GRPO, or clipped RLOO) on one batch: (loss,
    grads, mean entropy, RatioFigures). n_seq / n_tokens: the step's, when the batch is a part."""
    from minillm.training.algorithms import CLIPPED_RLOO, GRPO, part_loss_and_grads
    from minillm.training.rollout import Rollout, StepSize

    labels = cache.labels
    part = Rollout(slice(0, len(labels)), None, None, labels, old, ref, int((labels != -100).sum()))
    size = StepSize(len(labels) if n_seq is None else n_seq,
                    float(part.n_tokens if n_tokens is None else n_tokens))
    algorithm = GRPO if cfg.algo == "grpo" else CLIPPED_RLOO
    return part_loss_and_grads(model, algorithm, cache, part, adv, cfg, size)


def _clipped_case(seed, algo, **config):
    """A tiny float64 model, sampled-looking outputs, pi_old a perturbed policy (rho != 1)."""
    from minillm.training.reinforce import reinforce_forward

    rng = np.random.default_rng(seed)
    model = tiny_model()
    B, k, S, L, V = 2, 3, 5, 4, model.config.vocab_size
    input_ids = rng.integers(2, V, size=(B, S))
    mask = np.ones((B, S), dtype=np.int64)
    mask[1, 3:] = 0
    labels = random_outputs(rng, B * k, L, V)
    logp, cache = reinforce_forward(model, input_ids, labels, mask, repeats=k)
    valid = labels != -100
    old = np.where(valid, logp + rng.uniform(-0.5, 0.5, size=logp.shape), 0.0)
    ref = np.where(valid, logp + rng.normal(0, 0.5, size=logp.shape), 0.0)
    adv = rng.standard_normal(B * k)
    cfg = RLConfig(algo=algo, k=k, max_new_tokens=L, **config)
    return rng, model, input_ids, mask, labels, old, ref, adv, cfg, cache


@pytest.mark.parametrize("algo,extra", [
    ("grpo", dict(loss_type="grpo", beta=0.3)), ("grpo", dict(loss_type="dr_grpo", beta=0.0)),
    ("grpo", dict(loss_type="dapo", beta=0.7, epsilon_high=0.28, entropy_coef=0.2)),
    ("rloo", dict(epsilon=0.3))])
def test_clipped_surrogate_gradient_matches_finite_differences(algo, extra):
    """d/dtheta of the clipped loss through the whole model, float64, against a loss written here."""
    from minillm.ops import entropy_forward
    from minillm.training.grpo import ratio_summary

    rng, model, input_ids, mask, labels, old, ref, adv, cfg, cache = _clipped_case(11, algo, **extra)
    k = cfg.k
    loss, analytic, _, row = clipped_loss_and_grads(model, cache, old, ref, adv, cfg)
    stats = ratio_summary([row])
    assert 0 < stats["clip_frac"] < 1  # entries of each kind, so both branches are checked

    valid = labels != -100
    m = valid.astype(float)
    eh = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high

    def surrogate(params):
        mm = minillm.T5(model.config, params)
        logp = token_logprobs(mm, input_ids, labels, mask, repeats=k)  # (N, L)
        A = adv[:, None]
        if algo == "grpo":
            rho = np.exp(logp - old)
            per_tok = -np.minimum(rho * A, np.clip(rho, 1 - cfg.epsilon, 1 + eh) * A)
            per_tok += cfg.beta * (np.exp(ref - logp) - (ref - logp) - 1)
            if cfg.loss_type == "grpo":
                value = ((per_tok * m).sum(1) / m.sum(1)).mean()
            elif cfg.loss_type == "dr_grpo":
                value = (per_tok * m).sum() / (len(m) * cfg.max_new_tokens)
            else:
                value = (per_tok * m).sum() / m.sum()
        else:
            rho = np.exp((logp * m).sum(1, keepdims=True) - (old * m).sum(1, keepdims=True))
            value = (-np.minimum(rho * A, np.clip(rho, 1 - cfg.epsilon, 1 + eh) * A)).mean()
        logits = mm.logits(np.repeat(input_ids, k, 0), mm.shift_right(labels), np.repeat(mask, k, 0))
        H, _ = entropy_forward(logits.reshape(-1, logits.shape[-1]))
        return value - cfg.entropy_coef * H[valid.reshape(-1)].mean()

    assert loss == pytest.approx(surrogate(model.params), rel=1e-10)

    def forward(params):
        return np.asarray(surrogate(params)), None

    def backward(dout, _):
        return (), {name: g * float(dout) for name, g in analytic.items()}

    errors = check_gradients(forward, backward, (), model.params, rng, max_entries=12)
    assert len(errors) == len(model.params)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_grpo_with_one_update_and_no_beta_is_reinforce_with_the_group_advantage(loss_type):
    """At pi_old = pi and beta = 0, GRPO's gradient is REINFORCE's with A_i scaled by N w_i, the
    sequence's token weight (grpo: 1 / n_i; dr_grpo: 1 / max_new_tokens; dapo: N / all tokens)."""
    from minillm.training.grpo import ratio_summary
    from minillm.training.reinforce import reinforce_backward, reinforce_forward

    _, model, input_ids, mask, labels, _, ref, adv, cfg, cache = _clipped_case(
        12, "grpo", loss_type=loss_type, beta=0.0)
    logp = cache.logp.copy()
    _, grads, _, row = clipped_loss_and_grads(model, cache, logp, ref, adv, cfg)
    stats = ratio_summary([row])
    assert stats["clip_frac"] == 0 and stats["ratio_min"] == stats["ratio_max"] == 1.0
    assert stats["ratio_std"] == 0
    n_i = (labels != -100).sum(1)
    N = len(labels)
    scale = {"grpo": 1 / n_i, "dr_grpo": np.full(N, 1 / cfg.max_new_tokens),
             "dapo": np.full(N, N / n_i.sum())}[loss_type]
    _, cache2 = reinforce_forward(model, input_ids, labels, mask, repeats=cfg.k)
    _, want, _ = reinforce_backward(model, adv * scale, cache2)
    for name, g in want.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-15, err_msg=name)
    assert np.abs(want["shared.weight"]).max() > 1e-6  # not vacuous


def test_clipped_rloo_with_one_update_is_reinforce():
    from minillm.training.reinforce import reinforce_backward, reinforce_forward

    _, model, input_ids, mask, labels, _, ref, adv, cfg, cache = _clipped_case(13, "rloo")
    loss, grads, _, _ = clipped_loss_and_grads(model, cache, cache.logp.copy(), ref, adv, cfg)
    _, cache2 = reinforce_forward(model, input_ids, labels, mask, repeats=cfg.k)
    want_loss, want, _ = reinforce_backward(model, adv, cache2)
    assert loss == pytest.approx(-np.mean(adv), rel=1e-12)  # rho = 1: the loss is -mean A
    for name, g in want.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-12, atol=1e-16, err_msg=name)


def _exact_expectation(policy, prompts, outputs, texts, table, per_output):
    """sum over prompts (their mean) and outputs y of pi(y) * per_output(x, m, row, logp_tokens)."""
    exact = {k_: np.zeros_like(v) for k_, v in policy.params.items()}
    for x in prompts:
        xs = np.repeat(x[None], len(outputs), axis=0)
        logp = token_logprobs(policy, xs, outputs)  # (M, L)
        pi = np.exp(logp.sum(1))
        assert pi.sum() == pytest.approx(1.0, abs=1e-12)
        for m, row in enumerate(outputs):
            for k_, g in per_output(x, m, row, logp[m]).items():
                exact[k_] += pi[m] * g / len(prompts)
    return exact


def _token_logprob_grads(policy, x, row):
    """grad log pi(y_t | x, y_<t) for each token t of ``row``, from the SFT path on its prefixes."""
    n = int((row != -100).sum())
    sums = []
    for t in range(n + 1):  # the gradient of sum_{s < t} log pi(y_s): -t * grad(mean NLL)
        if t == 0:
            sums.append({k_: np.zeros_like(v) for k_, v in policy.params.items()})
            continue
        prefix = np.where(np.arange(len(row)) < t, row, -100)
        _, g = policy.loss_and_grads(x[None], prefix[None])
        sums.append({k_: -t * v for k_, v in g.items()})
    return [{k_: sums[t + 1][k_] - sums[t][k_] for k_ in sums[0]} for t in range(n)]


def _mean_gradient(policy, reference, optimizer_factory, reward, config, draws=150):
    V, L = policy.config.vocab_size, config.max_new_tokens
    prompts = [np.array([2, 3, 1]), np.array([3, 1])]
    examples = [Example(f"p{i}", "") for i in range(len(prompts))]
    enc = EncodedDataset(list(prompts), [np.array([1])] * 2, 0)
    indices = np.array([0, 1] * (config.batch_size // 2))
    rng = np.random.default_rng(6)
    out = []
    start = {k_: v.copy() for k_, v in policy.params.items()}
    for step in range(draws):
        for k_ in start:
            policy.params[k_][...] = start[k_]
        rec = optimizer_factory()
        rl_step(policy, reference, rec, _IdsTokenizer(), reward, examples, enc, indices, step,
                config, rng)
        out.append(np.concatenate([-rec.grads[k_].ravel() for k_ in start]))  # ascent direction
    for k_ in start:
        policy.params[k_][...] = start[k_]
    return prompts, np.array(out), V, L


def _assert_mean_near(draws, exact):
    want = np.concatenate([v.ravel() for v in exact.values()])
    mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    live = se > 1e-12
    z = np.abs(mean - want)[live] / se[live]
    assert z.max() < 5.0, f"max z-score {z.max():.2f}"
    np.testing.assert_allclose(mean[~live], want[~live], atol=1e-9)
    assert np.linalg.norm(mean - want) < 0.15 * np.linalg.norm(want)  # the check has power


def test_grpo_estimator_mean_approaches_its_exact_expectation():
    """Vocab 4, at most 2 new tokens, 13 outputs. GRPO with scale_rewards none, dr_grpo, beta > 0,
    one update: the gradient's expectation is, per prompt,
        (1/L) [ (1 - 1/k) sum_y pi(y) R(y) grad log pi(y)
                - beta sum_y pi(y) sum_t (1 - pi_ref(y_t)/pi(y_t)) grad log pi(y_t) ]
    (A = r - the group mean, whose own share 1/k cancels; the k3 term's gradient at samples of pi);
    the mean of rl_step's gradient over many batches must approach it."""
    V, L, k, beta = 4, 2, 4, 0.5
    policy = tiny_model(vocab=V, seed=3, d_model=8)
    reference = tiny_model(vocab=V, seed=4, d_model=8)
    outputs = _all_outputs(V, L)
    texts = [" ".join(str(t) for t in row if t not in (-100, 1)) for row in outputs]
    table = dict(zip(texts, np.random.default_rng(5).random(len(outputs)), strict=True))
    reward = Reward("table", lambda ex, out: table[out])
    config = RLConfig(algo="grpo", scale_rewards="none", loss_type="dr_grpo", beta=beta,
                      batch_size=40, k=k, lr=1e-3, warmup_steps=0, max_grad_norm=1e12,
                      max_new_tokens=L)
    prompts, draws, _, _ = _mean_gradient(policy, reference, _Recorder, reward, config)

    def per_output(x, m, row, logp_tok):
        ref_tok = token_logprobs(reference, x[None], row[None])[0]
        n = int((row != -100).sum())
        _, g = policy.loss_and_grads(x[None], row[None])
        out = {k_: (1 - 1 / k) * table[texts[m]] * (-n * v) / L for k_, v in g.items()}
        for t, gt in enumerate(_token_logprob_grads(policy, x, row)):
            c = beta * (1 - np.exp(ref_tok[t] - logp_tok[t])) / L
            for k_ in out:
                out[k_] -= c * gt[k_]
        return out

    _assert_mean_near(draws, _exact_expectation(policy, prompts, outputs, texts, table, per_output))


class _MovingRecorder(_Recorder):
    """Keeps the gradient of each update; the first update moves the policy to fixed new params."""

    def __init__(self, new_params):
        self.new_params, self.all = new_params, []

    def step(self, params, grads, lr=None):
        self.all.append({k_: v.copy() for k_, v in grads.items()})
        self.grads = self.all[-1]
        if len(self.all) == 1:
            for k_ in params:
                params[k_][...] = self.new_params[k_]
        return params


def test_second_clipped_rloo_update_estimates_the_gradient_at_the_moved_policy():
    """num_iterations 2, no clipping in reach (epsilon 50), kl_coef 0: the second update's gradient,
    rho-weighted samples of pi_old, has the exact policy gradient at the moved policy as its mean:
        E_old[rho (r - b) grad log pi_new] = E_new[r grad log pi_new]   (b: the other samples)."""
    V, L, k = 4, 2, 4
    old_policy = tiny_model(vocab=V, seed=3, d_model=8)
    moved = tiny_model(vocab=V, seed=3, d_model=8)
    noise = np.random.default_rng(9)
    for v in moved.params.values():
        v += 0.4 * noise.standard_normal(v.shape)
    outputs = _all_outputs(V, L)
    texts = [" ".join(str(t) for t in row if t not in (-100, 1)) for row in outputs]
    table = dict(zip(texts, np.random.default_rng(5).random(len(outputs)), strict=True))
    reward = Reward("table", lambda ex, out: table[out])
    config = RLConfig(algo="rloo", num_iterations=2, epsilon=50.0, kl_coef=0.0, batch_size=40, k=k,
                      lr=1e-3, warmup_steps=0, max_grad_norm=1e12, max_new_tokens=L)
    new = {k_: v.copy() for k_, v in moved.params.items()}
    prompts, draws, _, _ = _mean_gradient(old_policy, old_policy, lambda: _MovingRecorder(new),
                                          reward, config)

    def per_output(x, m, row, logp_tok):
        n = int((row != -100).sum())
        _, g = moved.loss_and_grads(x[None], row[None])
        return {k_: table[texts[m]] * (-n * v) for k_, v in g.items()}

    _assert_mean_near(draws, _exact_expectation(moved, prompts, outputs, texts, table, per_output))


GRPO_QUICK = [*QUICK, "--algo", "grpo", "--num-iterations", "2", "--beta", "0.1", "--loss-type",
              "grpo", "--epsilon-high", "0.28", "--entropy-coef", "0.5"]  # the bonus moves the policy


def test_cli_grpo_with_two_updates_a_step_resumes_bit_for_bit(start_dir, tmp_path, capsys):
    """(2 micro-batches a step: the token weights are the step's.)"""
    from minillm.cli import main

    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["rl", str(start_dir), "--out", str(full), *GRPO_QUICK, "--grad-accum", "2"]) == 0
    assert "GRPO (scale_rewards group, beta 0.1, loss grpo, 2 clipped updates" in capsys.readouterr().err
    state = ckpt.read_state(full)
    assert state["version"] == 5 and state["step"] == 4 and state["optimizer_t"] == 8
    assert state["rl_config"]["algo"] == "grpo" and state["rl_config"]["num_iterations"] == 2
    train = [r for r in _train_records(full) if r["kind"] == "train"]
    for key in ("kl_token", "clip_frac", "clip_frac_low", "clip_frac_high", "ratio_min",
                "ratio_max", "ratio_std", "entropy", "reward", "kl"):
        assert all(np.isfinite(r[key]) for r in train), key
    assert train[0]["kl_token"] == pytest.approx(0, abs=1e-5)  # the reference is the start
    assert any(r["ratio_std"] > 0 for r in train)  # the second update sees a moved policy
    assert main(["rl", str(start_dir), "--out", str(part), *GRPO_QUICK, "--grad-accum", "2",
                 "--stop-after", "2"]) == 0
    assert main(["rl", "--out", str(part), "--resume", "--no-progress"]) == 0
    assert _weights(full) == _weights(part)
    assert _train_records(full) == _train_records(part)


def test_cli_rl_flags_of_the_other_algorithm_and_an_old_state_are_refused(start_dir, tmp_path, capsys):
    from minillm.cli import main
    from tests.conftest import folder_digest

    out = tmp_path / "o"
    assert main(["rl", str(start_dir), "--out", str(out), *QUICK, "--beta", "0.1"]) == 2
    assert "--beta is not a setting of --algo rloo" in _err(capsys)
    assert main(["rl", str(start_dir), "--out", str(out), *QUICK, "--algo", "grpo", "--baseline",
                 "ema", "--kl-coef", "0.2"]) == 2
    assert "--baseline, --kl-coef are not a setting of --algo grpo" in _err(capsys)
    assert main(["rl", str(start_dir), "--out", str(out), *QUICK, "--num-iterations", "0"]) == 2
    assert "num_iterations must be a positive integer" in _err(capsys)
    assert not out.exists()

    # a version-3 rl state (before --algo) is refused in one line, nothing touched
    assert main(["rl", str(start_dir), "--out", str(out), *QUICK, "--stop-after", "2"]) == 0
    path = out / "trainer_state.json"
    state = json.loads(path.read_text())
    old = {k: v for k, v in state.items()}
    old["version"] = 3
    old["rl_config"] = {k: v for k, v in state["rl_config"].items()
                        if k not in ("algo", "num_iterations", "epsilon", "epsilon_high", "beta",
                                     "scale_rewards", "loss_type")}
    path.write_text(json.dumps(old))
    before = folder_digest(out)
    capsys.readouterr()
    assert main(["rl", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trainer state version 3, this minillm reads 5 for an rl run" in err[0]
    assert folder_digest(out) == before


@pytest.mark.slow
def test_rl_experiment_compare_writes_the_table_and_the_picture(tmp_path):
    out = _run_example(tmp_path, "--compare", "--sft-steps", "3", "--seconds", "4", "--evals", "2",
                       "--n-eval", "8", "--k", "2", "--batch-size", "2")
    for label in ("RLOO mu=1", "RLOO mu=4", "GRPO mu=1"):
        assert label in out, out
    folder = tmp_path / "exp"
    svg = (folder / "reward_vs_seconds.svg").read_text()
    assert svg.startswith("<svg") and svg.count('class="series"') == 6
    curves = json.loads((folder / "curves.json").read_text())["curves"]
    for c in curves.values():  # each ran about its budget (its last chunk sized by its mean step)
        assert 0.5 * 4 < c["train_seconds"] < 4 * 4 and c["seconds"][0] == 0 and len(c["reward"]) >= 2
        assert c["seconds"] == sorted(c["seconds"])


@pytest.mark.parametrize("algo,extra", [("grpo", dict(loss_type="grpo", beta=0.3)),
                                        ("grpo", dict(loss_type="dr_grpo")),
                                        ("grpo", dict(loss_type="dapo")), ("rloo", {})])
def test_clipped_loss_of_a_steps_parts_adds_up_to_the_whole(algo, extra):
    """Micro-batches (or ranks) of a step, each normalised by the step's sequences and tokens:
    their losses and gradients sum to the step's as one batch (the entropy bonus included)."""
    from minillm.training.reinforce import reinforce_forward

    _, model, input_ids, mask, labels, old, ref, adv, cfg, cache = _clipped_case(
        14, algo, entropy_coef=0.4, **extra)
    whole_loss, whole, _, _ = clipped_loss_and_grads(model, cache, old, ref, adv, cfg)
    k, n_tok = cfg.k, float((labels != -100).sum())
    loss, total = 0.0, {}
    for b in range(input_ids.shape[0]):  # one prompt (its k samples) a part
        rows = slice(b * k, (b + 1) * k)
        _, part_cache = reinforce_forward(model, input_ids[b:b + 1], labels[rows], mask[b:b + 1],
                                          repeats=k)
        part_loss, g, _, _ = clipped_loss_and_grads(model, part_cache, old[rows], ref[rows], adv[rows],
                                                    cfg, n_seq=len(labels), n_tokens=n_tok)
        loss += part_loss
        for name, v in g.items():
            total[name] = total.get(name, 0) + v
    assert loss == pytest.approx(whole_loss, rel=1e-12)
    for name, g in whole.items():
        np.testing.assert_allclose(total[name], g, rtol=1e-10, atol=1e-15, err_msg=name)

"""The SFT trainer: output-only loss, accumulation, divergence stop, bit-for-bit resume, evaluation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import minillm
from minillm import engine
from minillm.data import Example, collate, encode_examples
from minillm.data.batching import batch_stream
from minillm.evaluation import evaluate, strip_after_eos
from minillm.ops.cross_entropy import log_softmax
from minillm.optim import AdamW, ScaledAdamW
from minillm.runfolder import checkpoint as ckpt
from minillm.runfolder.metrics import read_metrics
from minillm.training.sft import TrainConfig, TrainState, sft_loss_and_grads, train_step
from minillm.training.sft_trainer import fit
from minillm.training.update import TrainingDiverged

EXAMPLES = [
    Example("Reverse the words.\nred owl pen", "pen owl red", "reverse_words"),
    Example("Reverse the words.\ncat dog", "dog cat", "reverse_words"),
    Example("Uppercase.\nbee fish key", "BEE FISH KEY", "uppercase"),
    Example("Uppercase.\nred", "RED", "uppercase"),
    Example("Reverse the words.\nbox cup hat key", "key hat cup box", "reverse_words"),
    Example("Uppercase.\nowl pen", "OWL PEN", "uppercase"),
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    from minillm.data.tokenizer import Tokenizer

    return Tokenizer.train([e.prompt for e in EXAMPLES] + [e.target for e in EXAMPLES],
                           vocab_size=150)


@pytest.fixture(scope="module")
def encoded(tokenizer):
    return encode_examples(EXAMPLES, tokenizer, 32, 16)[0]


def make_model(tokenizer, dtype="float32", dropout=0.0, seed=0):
    config = minillm.T5Config(vocab_size=tokenizer.vocab_size, d_model=16, d_kv=4, num_heads=2,
                              d_ff=32, num_layers=1, dropout_rate=dropout,
                              relative_attention_num_buckets=8)
    return minillm.T5.init(config, np.random.default_rng(seed), dtype=dtype)


def test_loss_is_on_output_tokens_only(tokenizer, encoded):
    """loss = mean over target tokens of -log p(y_t | x, y_<t); prompt and padding add nothing."""
    model = make_model(tokenizer, "float64")
    b = collate(encoded, np.arange(5))
    loss, _, n = sft_loss_and_grads(model, [b])
    labels = b["labels"]
    assert n == int((labels != -100).sum()) == sum(len(encoded.targets[i]) for i in range(5))
    logits = model.logits(b["input_ids"], model.shift_right(labels), b["attention_mask"])
    logp = log_softmax(logits)
    nll = [-logp[i, t, labels[i, t]] for i in range(5) for t in range(labels.shape[1])
           if labels[i, t] != -100]
    np.testing.assert_allclose(loss, np.mean(nll), rtol=1e-12)


def test_grad_accumulation_equals_one_big_batch(tokenizer, encoded):
    model = make_model(tokenizer, "float64")
    idx = np.arange(8)
    whole = collate(encoded, idx)
    parts = [collate(encoded, idx[:3]), collate(encoded, idx[3:])]  # unequal token counts
    loss1, g1, n1 = sft_loss_and_grads(model, [whole])
    loss2, g2, n2 = sft_loss_and_grads(model, parts)
    assert n1 == n2
    np.testing.assert_allclose(loss2, loss1, rtol=1e-12)
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], rtol=1e-9, atol=1e-13)


def test_nan_loss_stops_before_the_update(tokenizer, encoded):
    model = make_model(tokenizer)
    model.params["encoder.final_layer_norm.weight"][0] = np.nan
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(TrainingDiverged, match="not finite"):
        train_step(model, AdamW(), [collate(encoded, np.arange(4))], 0, TrainConfig(steps=1),
                   1, None)
    for k, v in before.items():
        np.testing.assert_array_equal(model.params[k], v)


def test_scaled_adamw_scales_only_the_position_tables(tokenizer, encoded):
    """lr * scale for relative_attention_bias, lr elsewhere; state dict round trip."""
    rng = np.random.default_rng(0)
    model = make_model(tokenizer, "float64")
    grads = {k: rng.standard_normal(v.shape) for k, v in model.params.items()}
    ref = {k: v.copy() for k, v in model.params.items()}
    opt = ScaledAdamW(lr=1e-3, weight_decay=0.0, position_bias_lr_scale=30.0)
    opt.step(model.params, grads, 1e-3)
    for k, v in model.params.items():
        # Adam's first step moves each entry by lr * sign(g) (up to eps)
        lr = 3e-2 if "relative_attention_bias" in k else 1e-3
        np.testing.assert_allclose(np.abs(v - ref[k]), lr, rtol=1e-4, err_msg=k)
    opt2 = ScaledAdamW(lr=1e-3, weight_decay=0.0, position_bias_lr_scale=30.0)
    state = opt.state_dict()  # (arrays by reference: copy them, as a checkpoint does)
    opt2.load_state_dict({"t": state["t"], "arrays": {k: v.copy() for k, v in state["arrays"].items()}})
    p1, p2 = {k: v.copy() for k, v in model.params.items()}, {k: v.copy() for k, v in model.params.items()}
    opt.step(p1, grads, 1e-3)
    opt2.step(p2, grads, 1e-3)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])


def test_batch_stream_resumes_at_a_position(encoded):
    stream = batch_stream(encoded, 5, seed=3)
    full = [(b["index"].tolist(), pos) for b, pos in (next(stream) for _ in range(15))]
    for k in (1, 4, 5, 9):
        epoch, start = full[k - 1][1]
        rest = batch_stream(encoded, 5, seed=3, epoch=epoch, start=start)
        got = [(b["index"].tolist(), pos) for b, pos in (next(rest) for _ in range(15 - k))]
        assert got == full[k:]
    assert full[4][1] == (1, 0)  # 24 examples, batches of 5: 5 per epoch


def test_strip_after_eos():
    assert strip_after_eos([0, 7, 8, 1, 0, 0], eos_id=1, start_id=0) == [7, 8]
    assert strip_after_eos([0, 7, 8], eos_id=1, start_id=0) == [7, 8]


def test_evaluate_reports_per_task(tokenizer, encoded):
    model = make_model(tokenizer)
    res = evaluate(model, tokenizer, EXAMPLES[:6], encode_examples(EXAMPLES[:6], tokenizer, 32, 16)[0],
                   batch_size=4, max_new_tokens=4,
                   verifiers={"uppercase": lambda ex, out: 1.0})
    assert set(res["per_task"]) == {"reverse_words", "uppercase"}
    assert res["per_task"]["uppercase"]["n"] == 3 and res["per_task"]["uppercase"]["score"] == 1.0
    assert 0.0 <= res["exact_match"] <= 1.0 and res["perplexity"] > 1.0
    assert np.isclose(res["perplexity"], np.exp(res["loss"]))


def run_fit(tokenizer, encoded, out, steps=8, stop_after=None, resume=False, plot=False, **cfg):
    config = TrainConfig(steps=steps, batch_size=5, lr=1e-2, warmup_steps=2, eval_every=4,
                         log_every=2, max_new_tokens=4, seed=1, position_bias_lr_scale=10.0, **cfg)
    if resume:
        model, _, opt_state, s = ckpt.load_checkpoint(out)
        opt = ScaledAdamW.from_config(config)
        opt.load_state_dict(opt_state)
        state = TrainState.from_saved(s)
    else:
        model, opt, state = make_model(tokenizer, dropout=0.1), None, None
    result = fit(model, tokenizer, encoded, config, str(out), eval_examples=EXAMPLES[:6],
                 eval_data=encode_examples(EXAMPLES[:6], tokenizer, 32, 16)[0],
                 state=state, optimizer=opt, stop_after=stop_after, progress=False, plot=plot)
    return model, result


def test_resume_is_bit_for_bit(tokenizer, encoded, tmp_path):
    """Train N steps == train N/2, stop, resume to N (dropout on, accumulation, epochs crossed)."""
    full, res = run_fit(tokenizer, encoded, tmp_path / "a", steps=10, grad_accum=2)
    assert res["step"] == 10 and not res["stopped_early"]
    half, res = run_fit(tokenizer, encoded, tmp_path / "b", steps=10, grad_accum=2, stop_after=5)
    assert res["stopped_early"] and ckpt.read_state(tmp_path / "b")["step"] == 5
    resumed, res = run_fit(tokenizer, encoded, tmp_path / "b", steps=10, grad_accum=2, resume=True)
    assert res["step"] == 10
    for k, v in full.params.items():
        np.testing.assert_array_equal(resumed.params[k], v, err_msg=k)
    # and on disk
    a = minillm.from_pretrained(tmp_path / "a")
    b = minillm.from_pretrained(tmp_path / "b")
    for k, v in a.params.items():
        np.testing.assert_array_equal(b.params[k], v)
    # metrics.jsonl: logged every 2 steps and at the stop, each step once, in order
    steps = [r["step"] for r in read_metrics(str(tmp_path / "b" / "metrics.jsonl"))
             if r["kind"] == "train"]
    assert steps == [2, 4, 5, 6, 8, 10]


def test_fit_writes_the_run_folder(tokenizer, encoded, tmp_path):
    model, res = run_fit(tokenizer, encoded, tmp_path, steps=8, plot=True)
    recs = read_metrics(str(tmp_path / "metrics.jsonl"))
    kinds = [r["kind"] for r in recs]
    assert kinds.count("train") == 4 and kinds.count("eval") == 1 and kinds[-1] == "final_eval"
    train = [r for r in recs if r["kind"] == "train"]
    assert all(r["tokens_per_s"] > 0 and np.isfinite(r["loss"]) for r in train)
    assert set(recs[-1]["per_task"]) == {"reverse_words", "uppercase"}
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["step"] == 8 and state["best"]["step"] in (4, 8)
    assert minillm.from_pretrained(tmp_path / "best").config == model.config
    assert res["plots"] == {"loss": str(tmp_path / "loss.svg"), "tasks": str(tmp_path / "tasks.svg")}
    assert (tmp_path / "loss.svg").read_text().startswith("<svg ")


def test_divergence_keeps_the_last_good_checkpoint(tokenizer, encoded, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = engine.loss_and_grads

    def goes_nan(*a, **k):
        calls["n"] += 1
        loss, grads = real(*a, **k)
        return (float("nan"), grads) if calls["n"] == 6 else (loss, grads)

    monkeypatch.setattr(engine, "loss_and_grads", goes_nan)
    with pytest.raises(TrainingDiverged, match=r"step 6: the loss is nan.*checkpoint \(step 4\)"):
        run_fit(tokenizer, encoded, tmp_path, steps=8)
    assert ckpt.read_state(tmp_path)["step"] == 4
    model = minillm.from_pretrained(tmp_path)
    assert all(np.isfinite(v).all() for v in model.params.values())
    assert not os.path.exists(tmp_path / ckpt.STAGING)


def test_an_update_that_goes_inf_is_caught_after_it(tokenizer, encoded):
    """A finite loss and gradient, but lr 1e38: the parameters come out inf; the step says so."""
    model = make_model(tokenizer)
    with pytest.raises(TrainingDiverged, match=r"step 1: after the update .* is not finite"):
        train_step(model, ScaledAdamW(), [collate(encoded, np.arange(4))], 0,
                   TrainConfig(steps=1, lr=1e38, warmup_steps=0), 1, None)


@pytest.mark.parametrize("where", ["params", "moments"])
def test_a_non_finite_update_is_never_checkpointed(tokenizer, encoded, tmp_path, monkeypatch, where):
    """The last step's update writes an inf (into a parameter, or into an AdamW moment): the run stops;
    the checkpoint of step 4 and best/ stay finite, load, and resume to the end."""
    real = ScaledAdamW.step

    def goes_inf(self, params, grads, lr):
        real(self, params, grads, lr)
        if self.t == 8:  # the last step, which evaluates and saves
            target = params if where == "params" else self.main.v
            next(iter(target.values())).flat[0] = np.inf
        return params

    monkeypatch.setattr(ScaledAdamW, "step", goes_inf)
    with pytest.raises(TrainingDiverged, match=r"step 8: after the update .*checkpoint \(step 4\)"):
        run_fit(tokenizer, encoded, tmp_path, steps=8)
    state = ckpt.read_state(tmp_path)
    assert state["step"] == 4 and state["best"]["step"] == 4
    for folder in (tmp_path, tmp_path / ckpt.BEST_DIR):
        assert all(np.isfinite(v).all() for v in minillm.from_pretrained(folder).params.values())
    _, _, opt_state, _ = ckpt.load_checkpoint(tmp_path)
    assert all(np.isfinite(v).all() for v in opt_state["arrays"].values())
    monkeypatch.setattr(ScaledAdamW, "step", real)
    _, res = run_fit(tokenizer, encoded, tmp_path, steps=8, resume=True)
    assert res["step"] == 8 and not res["stopped_early"]


def test_nonfinite_state_names_the_array():
    from minillm.optim import first_nonfinite, nonfinite_state

    params = {"a": np.ones((3, 4), np.float32), "b": np.zeros(5), "empty": np.zeros((0, 2))}
    opt = AdamW()
    opt.step(params, {k: np.ones_like(v) for k, v in params.items()})
    assert first_nonfinite(params) is None and nonfinite_state(params, opt) is None
    for bad in (np.nan, np.inf, -np.inf):
        p = {k: v.copy() for k, v in params.items()}
        p["b"][3] = bad
        assert first_nonfinite(p) == "b" and nonfinite_state(p, opt) == "parameter b"
    opt.v["a"][2, 1] = np.nan
    assert nonfinite_state(params, opt) == "AdamW moment v.a"


NAN, INF = float("nan"), float("inf")
BAD_COMMON = [  # (field, value, the message's words): every number finite, ints not bools
    ("lr", NAN, "lr must be a finite number > 0"), ("lr", 0.0, "lr must"), ("lr", INF, "lr must"),
    ("lr", True, "lr must"), ("lr", "1e-3", "lr must"),
    ("weight_decay", NAN, "weight_decay must be a finite number >= 0"),
    ("weight_decay", -0.1, "weight_decay must"),
    ("betas", (0.9, NAN), r"betas\[1\] must be a number in \[0, 1\)"),
    ("betas", (1.0, 0.999), r"betas\[0\] must"), ("betas", ("a", "b"), r"betas\[0\] must"),
    ("betas", (0.9,), "betas must be two numbers"), ("betas", "ab", r"betas(\[0\])? must"),
    ("eps", 0.0, "eps must"), ("eps", INF, "eps must"),
    ("max_grad_norm", INF, "max_grad_norm must"), ("max_grad_norm", NAN, "max_grad_norm must"),
    ("min_lr_ratio", 1.5, r"min_lr_ratio must be a number in \[0, 1\]"),
    ("min_lr_ratio", NAN, "min_lr_ratio must"),
    ("decay_fraction", 0.0, r"decay_fraction must be a number in \(0, 1\]"),
    ("decay_fraction", NAN, "decay_fraction must"),
    ("schedule", "step", "schedule must be one of cosine, linear, constant, wsd"),
    ("steps", True, "steps must be a positive integer"), ("steps", 20.5, "steps must"),
    ("steps", 0, "steps must"), ("batch_size", False, "batch_size must"),
    ("warmup_steps", -1, "warmup_steps must be an integer >= 0"), ("seed", True, "seed must"),
    ("eval_every", 2.0, "eval_every must"), ("save_every", True, "save_every must"),
    ("save_every", -2, "save_every must"), ("log_every", INF, "log_every must"),
]


@pytest.mark.parametrize("field,value,words", BAD_COMMON + [
    ("position_bias_lr_scale", INF, "position_bias_lr_scale must be a finite number > 0"),
    ("position_bias_lr_scale", NAN, "position_bias_lr_scale must"),
    ("position_bias_lr_scale", 0.0, "position_bias_lr_scale must"),
    ("label_smoothing", NAN, r"label_smoothing must be a number in \[0, 1\)"),
    ("label_smoothing", 1.0, "label_smoothing must"),
    ("grad_accum", True, "grad_accum must"), ("max_new_tokens", 0, "max_new_tokens must"),
])
def test_train_config_refuses_each_bad_field_in_one_line(field, value, words):
    with pytest.raises(ValueError, match=words) as e:
        TrainConfig(**{field: value})
    assert "\n" not in str(e.value) and field.split("[")[0] in str(e.value)
    with pytest.raises(ValueError, match=words):  # as trainer_state.json gives it back
        TrainConfig.from_dict({**TrainConfig().to_dict(), field: value})


@pytest.mark.parametrize("field,value,words", BAD_COMMON + [
    ("kl_coef", NAN, "kl_coef must be a finite number >= 0"), ("kl_coef", INF, "kl_coef must"),
    ("entropy_coef", -1.0, "entropy_coef must"), ("ema_decay", NAN, "ema_decay must"),
    ("ema_decay", 1.0, "ema_decay must"), ("temperature", INF, "temperature must"),
    ("temperature", 0.0, "temperature must"), ("top_p", NAN, "top_p must"),
    ("top_p", 0.0, "top_p must"), ("top_k", True, "top_k must"), ("top_k", -1, "top_k must"),
    ("k", True, "k must"), ("normalize_advantages", 1, "normalize_advantages must be true or false"),
    ("baseline", "mean", "baseline must be one of"), ("baseline", 3, "baseline must be one of"),
])
def test_rl_config_refuses_each_bad_field_in_one_line(field, value, words):
    from minillm.training.rl import RLConfig

    with pytest.raises(ValueError, match=words) as e:
        RLConfig(**{field: value})
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=words):
        RLConfig.from_dict({**RLConfig().to_dict(), field: value})


def test_configs_accept_their_defaults_and_edges():
    from minillm.training.rl import RLConfig

    TrainConfig(lr=1e38, warmup_steps=0, weight_decay=0, betas=(0.0, 0.0), min_lr_ratio=1.0,
                save_every=0, label_smoothing=0.5, position_bias_lr_scale=30)
    RLConfig(lr=1, kl_coef=0, normalize_advantages=True, top_p=1, ema_decay=0, baseline="none", k=1)
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    assert RLConfig.from_dict(RLConfig().to_dict()) == RLConfig()


def test_generator_state_round_trips_and_a_foreign_one_is_named():
    from minillm import seeds
    from minillm.runfolder.settings import restore_generator

    rng = seeds.generator(3, "dropout")
    rng.random(5)
    state = json.loads(json.dumps(rng.bit_generator.state))  # as trainer_state.json keeps it
    np.testing.assert_array_equal(restore_generator(state).random(4), rng.random(4))
    for bad in ({**state, "bit_generator": "MT19937"}, {**state, "bit_generator": "__class__"},
                {"state": state["state"]}):
        with pytest.raises(ValueError, match=r"trainer_state\.json: rng_state\.bit_generator"):
            restore_generator(bad)

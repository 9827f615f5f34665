"""T5's parameters as Hugging Face names them: the schema, T5's initialisation, and the check
that a folder's tensors fit a config.

Parameters live in one flat dict named exactly as in transformers'
``T5ForConditionalGeneration`` state dict; gradients use the same keys, so
saving and loading are a walk over names and optimizers zip the two dicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minillm.config import T5Config

# Tensors transformers' T5ForConditionalGeneration ignores when it finds them.
IGNORED_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
# Names under which transformers may store the shared embedding again.
EMBEDDING_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def ffn_names(config: T5Config) -> tuple[str, ...]:
    """The FFN's weight names inside ``DenseReluDense``."""
    return ("wi_0", "wi_1", "wo") if config.is_gated_act else ("wi", "wo")


def param_shapes(config: T5Config, lm_head: bool | None = None) -> dict[str, tuple[int, ...]]:
    """Every parameter's Hugging Face name and shape, in state-dict order.

    ``lm_head``: include a separate ``lm_head.weight`` (default: when the
    embeddings are not tied).
    """
    C, F, V, HD = config.d_model, config.d_ff, config.vocab_size, config.inner_dim
    NB, H = config.relative_attention_num_buckets, config.num_heads
    ff_shapes = {"wi": (F, C), "wi_0": (F, C), "wi_1": (F, C), "wo": (C, F)}
    attn_shapes = {"q": (HD, C), "k": (HD, C), "v": (HD, C), "o": (C, HD)}
    shapes: dict[str, tuple[int, ...]] = {"shared.weight": (V, C)}
    for stack, n_layers in (("encoder", config.num_layers), ("decoder", config.num_decoder_layers)):
        for i in range(n_layers):
            b = f"{stack}.block.{i}.layer"
            for w in "qkvo":
                shapes[f"{b}.0.SelfAttention.{w}.weight"] = attn_shapes[w]
            if i == 0:
                shapes[f"{b}.0.SelfAttention.relative_attention_bias.weight"] = (NB, H)
            shapes[f"{b}.0.layer_norm.weight"] = (C,)
            ff = 1
            if stack == "decoder":
                for w in "qkvo":
                    shapes[f"{b}.1.EncDecAttention.{w}.weight"] = attn_shapes[w]
                shapes[f"{b}.1.layer_norm.weight"] = (C,)
                ff = 2
            for w in ffn_names(config):
                shapes[f"{b}.{ff}.DenseReluDense.{w}.weight"] = ff_shapes[w]
            shapes[f"{b}.{ff}.layer_norm.weight"] = (C,)
        shapes[f"{stack}.final_layer_norm.weight"] = (C,)
    if lm_head if lm_head is not None else not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def init_std(name: str, config: T5Config) -> float | None:
    """T5's initial standard deviation for a parameter (None: a norm gain, set to the factor).

    From transformers' ``T5PreTrainedModel._init_weights``; ``f`` is
    initializer_factor: embeddings and LM head N(0, f); W_q N(0, f (C D)^-1/2);
    W_k, W_v, wi N(0, f C^-1/2); W_o N(0, f (H D)^-1/2); wo N(0, f F^-1/2);
    the relative position table N(0, f C^-1/2).
    """
    f, C, D, H, F = (config.initializer_factor, config.d_model, config.d_kv,
                     config.num_heads, config.d_ff)
    leaf = name.rsplit(".", 2)[-2]  # "q", "wi_0", "layer_norm", "shared", ...
    table = {
        "shared": f, "lm_head": f, "q": f * (C * D) ** -0.5, "k": f * C**-0.5, "v": f * C**-0.5,
        "o": f * (H * D) ** -0.5, "relative_attention_bias": f * C**-0.5,
        "wi": f * C**-0.5, "wi_0": f * C**-0.5, "wi_1": f * C**-0.5, "wo": f * F**-0.5,
    }
    return table.get(leaf)


def init_params(config: T5Config, rng: np.random.Generator, dtype: Any = "float32") -> dict:
    """Fresh parameters with T5's initialisation (see ``init_std``)."""
    params = {}
    for name, shape in param_shapes(config).items():
        std = init_std(name, config)
        if std is None:  # an RMS-norm gain
            params[name] = np.full(shape, config.initializer_factor, dtype=dtype)
        else:
            params[name] = (rng.standard_normal(shape) * std).astype(dtype)
    return params



def params_from_tensors(config: T5Config, tensors: dict, source: str, dtype: Any = "float32") -> dict:
    """The params of ``config`` from a checkpoint's tensors, cast to ``dtype``; strict.

    Drops what transformers ignores, folds the embedding aliases into
    ``shared.weight`` and a tied ``lm_head.weight`` that merely repeats it. Every
    missing, unexpected, wrong-shape or non-finite tensor is named in one
    ValueError that starts with ``source`` (the weights file).
    """
    tensors = dict(tensors)
    for k in IGNORED_KEYS:
        tensors.pop(k, None)
    for alias in EMBEDDING_ALIASES:  # tied to shared.weight
        t = tensors.pop(alias, None)
        if t is not None and "shared.weight" not in tensors:
            tensors["shared.weight"] = t

    # The LM head: separate when the file holds its own lm_head.weight (unless
    # the config ties it and the file merely repeats shared.weight).
    lm = tensors.get("lm_head.weight")
    if lm is not None and config.tie_word_embeddings and "shared.weight" in tensors \
            and lm.shape == tensors["shared.weight"].shape \
            and np.array_equal(lm, tensors["shared.weight"]):
        del tensors["lm_head.weight"]
    separate_head = "lm_head.weight" in tensors or not config.tie_word_embeddings
    expected = param_shapes(config, lm_head=separate_head)

    problems = []
    missing = [k for k in expected if k not in tensors]
    if missing:
        problems.append(f"missing tensor(s): {', '.join(missing)}")
    unexpected = sorted(k for k in tensors if k not in expected)
    if unexpected:
        problems.append(f"unexpected tensor(s): {', '.join(unexpected)}")
    for k, shape in expected.items():
        if k in tensors and tuple(tensors[k].shape) != shape:
            problems.append(f"tensor {k} has shape {tuple(tensors[k].shape)}, config says {shape}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))

    params = {k: np.ascontiguousarray(tensors[k], dtype=dtype) for k in expected}
    for k, v in params.items():
        if not np.isfinite(v).all():
            raise ValueError(f"{source}: tensor {k} holds NaN or inf")
    return params


def op_params(params: dict, prefix: str, names) -> dict:
    """{name: params[f"{prefix}.{name}.weight"]}: an op's parameter dict out of the model's."""
    return {n: params[f"{prefix}.{n}.weight"] for n in names}


def add_grads(total: dict, grads: dict, prefix: str | None = None, weight: float | None = None) -> dict:
    """total[key] += weight * grads[name], in place; returns ``total``. The one gradient-summing helper.

    key is ``f"{prefix}.{name}.weight"`` with a prefix (an op's grads into the
    model's), else ``name``. A key not yet in ``total`` is set, not copied; a
    parameter used twice (the tied embedding, the shared position table)
    receives both. ``weight`` scales in the gradients' own dtype (micro-batch
    k of n_k target tokens out of N: weight n_k / N).
    """
    for name, g in grads.items():
        key = name if prefix is None else f"{prefix}.{name}.weight"
        if weight is not None:
            g = g * g.dtype.type(weight)
        if key in total:
            total[key] += g
        else:
            total[key] = g
    return total

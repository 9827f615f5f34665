"""T5Config: the model's hyper-parameters, with Hugging Face's field names.

A ``config.json`` written by transformers reads into this dataclass field for
field (``from_dict``; the file itself is read by :mod:`minillm.storage.hf`), and
``to_dict()`` writes one that transformers reads back.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

# Activations minillm implements, by the name T5's config gives them.
ACTIVATIONS = ("relu", "gelu_new", "silu")

# Keys transformers writes into a T5 config.json that say nothing about the
# architecture minillm builds; they are accepted and kept for the round trip.
_PASSTHROUGH_KEYS = {
    "architectures", "transformers_version", "torch_dtype", "dtype", "model_type",
    "use_cache", "is_encoder_decoder", "classifier_dropout", "is_decoder",
    "dense_act_fn", "is_gated_act", "n_positions", "output_past", "gradient_checkpointing",
    "task_specific_params", "_name_or_path", "bos_token_id", "sep_token_id",
    "output_attentions", "output_hidden_states", "return_dict", "id2label", "label2id",
    "tokenizer_class", "prefix", "problem_type", "finetuning_task", "torchscript",
    "pruned_heads", "chunk_size_feed_forward", "add_cross_attention", "tie_encoder_decoder",
    "max_length", "min_length", "num_beams", "early_stopping", "length_penalty",
    "no_repeat_ngram_size", "decoder_start_token_id_", "_attn_implementation_autoset",
    "use_return_dict", "num_labels",
}


@dataclass(frozen=True)
class T5Config:
    """T5's hyper-parameters, named as in ``transformers.T5Config``.

    Shapes follow from them: C = d_model, D = d_kv, H = num_heads, F = d_ff,
    V = vocab_size; attention projects C -> H*D (which need not equal C).

    ``feed_forward_proj`` is ``"relu"`` (T5 v1.0) or ``"gated-gelu"`` (T5 v1.1 /
    FLAN-T5), or more generally ``ACT`` / ``gated-ACT`` with ACT in ACTIVATIONS;
    as in transformers, ``"gated-gelu"`` means the tanh GELU (``gelu_new``).

    ``tie_word_embeddings``: the LM head reuses ``shared.weight``.
    ``scale_decoder_outputs``: multiply the decoder output by d_model**-0.5
    before the LM head. transformers 5 writes it explicitly; older configs do
    not, and then it equals ``tie_word_embeddings`` (original T5 rescales
    exactly when the embeddings are tied).
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    scale_decoder_outputs: bool | None = None
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    # Keys from a config.json that minillm does not use but writes back.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_decoder_layers is None:
            object.__setattr__(self, "num_decoder_layers", self.num_layers)
        if self.scale_decoder_outputs is None:
            object.__setattr__(self, "scale_decoder_outputs", bool(self.tie_word_embeddings))
        if isinstance(self.eos_token_id, list | tuple):
            # transformers allows a list; the first is the model's own eos.
            if not self.eos_token_id:
                raise ValueError("config field 'eos_token_id' is an empty list (it names the end token)")
            object.__setattr__(self, "eos_token_id", self.eos_token_id[0])
        self.validate()

    # ------------------------------------------------------------------ derived
    @property
    def is_gated_act(self) -> bool:
        """True for ``gated-ACT``: FFN is wo(act(wi_0 x) * wi_1 x)."""
        return self.feed_forward_proj.split("-")[0] == "gated"

    @property
    def dense_act_fn(self) -> str:
        """The activation's name, as transformers derives it from feed_forward_proj."""
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    @property
    def inner_dim(self) -> int:
        """H * D, the width of the attention projections."""
        return self.num_heads * self.d_kv

    # --------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ValueError naming the field when the config cannot build a T5."""
        positive = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads",
                    "relative_attention_num_buckets", "relative_attention_max_distance")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"config field {name!r} must be a positive integer, got {v!r}")
        for name in ("num_layers", "num_decoder_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"config field {name!r} must be a positive integer, got {v!r}")
        if self.relative_attention_num_buckets < 4:
            raise ValueError("config field 'relative_attention_num_buckets' must be at least 4")
        half, dist = self.relative_attention_num_buckets // 2, self.relative_attention_max_distance
        if dist <= half:  # the log-spaced buckets divide by log(max_distance / max_exact)
            raise ValueError(f"config field 'relative_attention_max_distance' = {dist} must exceed "
                             f"relative_attention_num_buckets // 2 = {half}")
        if not 0.0 <= float(self.dropout_rate) < 1.0:
            raise ValueError(f"config field 'dropout_rate' must be in [0, 1), got {self.dropout_rate!r}")
        for name in ("layer_norm_epsilon", "initializer_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:
                raise ValueError(f"config field {name!r} must be a finite number > 0, got {v!r}")
        for name in ("tie_word_embeddings", "scale_decoder_outputs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config field {name!r} must be true or false, "
                                 f"got {getattr(self, name)!r}")
        parts = self.feed_forward_proj.split("-") if isinstance(self.feed_forward_proj, str) else []
        if not parts or (len(parts) > 1 and parts[0] != "gated") or len(parts) > 2:
            raise ValueError(
                f"config field 'feed_forward_proj' must be 'ACT' or 'gated-ACT', "
                f"got {self.feed_forward_proj!r}"
            )
        if self.dense_act_fn not in ACTIVATIONS:
            raise ValueError(
                f"config field 'feed_forward_proj' = {self.feed_forward_proj!r}: activation "
                f"{self.dense_act_fn!r} is not implemented (have {', '.join(ACTIVATIONS)}; "
                f"'gated-gelu' means gelu_new)"
            )
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v < self.vocab_size:
                raise ValueError(
                    f"config field {name!r} = {v!r} is not a token id below vocab_size={self.vocab_size}"
                )

        self.check_fits_memory()

    def num_parameters(self) -> int:
        """The parameter count the shapes give (C, D, H, F, V; L and L' layers), before any allocation.

        shared V*C (+ lm_head V*C untied); per encoder layer q,k,v,o 4*C*H*D, the FFN
        (2 or 3)*C*F, 2 norms; per decoder layer 8*C*H*D, the FFN, 3 norms; the two
        position tables buckets*H; two final norms.
        """
        c, hd, f = self.d_model, self.inner_dim, self.d_ff
        ffn = (3 if self.is_gated_act else 2) * c * f
        embed = self.vocab_size * c * (1 if self.tie_word_embeddings else 2)
        enc = self.num_layers * (4 * c * hd + ffn + 2 * c)
        dec = self.num_decoder_layers * (8 * c * hd + ffn + 3 * c)
        return embed + enc + dec + 2 * self.relative_attention_num_buckets * self.num_heads + 2 * c

    def check_fits_memory(self, itemsize: int = 4) -> None:
        """ValueError when the parameters alone (``itemsize`` bytes each) exceed the machine's memory."""
        try:
            memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # pragma: no cover - no sysconf (Windows)
            return
        need = self.num_parameters() * itemsize
        if need > memory:
            raise ValueError(f"{self.num_parameters():,} parameters ({need / 2**30:.1f} GiB) "
                             f"do not fit in this machine's {memory / 2**30:.1f} GiB of memory "
                             f"(num_layers {self.num_layers}, d_model {self.d_model}, "
                             f"d_ff {self.d_ff}, vocab_size {self.vocab_size})")

    # ---------------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> T5Config:
        """Build from a config.json dict; unknown fields raise ValueError naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}")
        if d.get("model_type", "t5") != "t5":
            raise ValueError(f"{source}: model_type is {d['model_type']!r}, minillm reads 't5'")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        unknown = []
        for k, v in d.items():
            if k in names:
                kwargs[k] = v
            elif k in _PASSTHROUGH_KEYS or k.startswith("_"):
                extra[k] = v
            else:
                unknown.append(k)
        if unknown:
            raise ValueError(f"{source}: unknown T5Config field(s): {', '.join(sorted(unknown))}")
        if "decoder_start_token_id" not in kwargs or kwargs["decoder_start_token_id"] is None:
            # T5 starts decoding from the pad token.
            kwargs["decoder_start_token_id"] = kwargs.get("pad_token_id", 0)
        # transformers derives these two from feed_forward_proj; a value that
        # disagrees is an inconsistent config.
        ffp = kwargs.get("feed_forward_proj", "relu")
        if isinstance(ffp, str):
            derived = {
                "dense_act_fn": "gelu_new" if ffp == "gated-gelu" else ffp.split("-")[-1],
                "is_gated_act": ffp.split("-")[0] == "gated",
            }
            for k, want in derived.items():
                if k in extra and extra[k] != want:
                    raise ValueError(
                        f"{source}: field {k!r} = {extra[k]!r} disagrees with "
                        f"feed_forward_proj={ffp!r} (which means {want!r})"
                    )
        try:
            return cls(**kwargs, extra=extra)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """A config.json dict that transformers' T5Config reads back."""
        d = {k: v for k, v in self.extra.items() if k not in ("torch_dtype",)}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                d[f.name] = getattr(self, f.name)
        d.update(
            architectures=["T5ForConditionalGeneration"],
            model_type="t5",
            is_encoder_decoder=True,
            dense_act_fn=self.dense_act_fn,
            is_gated_act=self.is_gated_act,
        )
        return dict(sorted(d.items()))

    def replace(self, **changes: Any) -> T5Config:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

"""Entropy of the softmax distribution of each row of logits.

    p_v = softmax(z)_v,    H = -sum_v p_v log p_v

The REINFORCE trainer's optional entropy bonus (minillm.training.reinforce) is
this op at every sampled position.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.backend import get_xp
from minillm.ops.cross_entropy import log_softmax


class EntropyCache(NamedTuple):
    """What the entropy's backward needs."""

    logp: Any  # (N, V) log p = log softmax(z)
    H: Any     # (N,) the entropies


def entropy_forward(logits, params=None):
    """logits z (N, V) -> H (N,), H_n = -sum_v p_nv log p_nv with p = softmax(z_n).

    The cache is an :class:`EntropyCache` (log p (N, V), H (N,)): backward needs both.
    """
    xp = get_xp(logits)
    logp = log_softmax(logits)  # (N, V)
    H = -(xp.exp(logp) * logp).sum(axis=-1)  # (N,)
    return H, EntropyCache(logp, H)


def entropy_backward(dH, cache: EntropyCache):
    """dH (N,) -> (dlogits (N, V), {}).

    H = -sum_v p_v log p_v, dp_v/dz_j = p_v ([v = j] - p_j)  =>  dH/dz_j = -p_j (log p_j + H).
    """
    logp, H = cache.logp, cache.H
    xp = get_xp(logp)
    p = xp.exp(logp)  # (N, V)
    dH = dH.astype(logp.dtype, copy=False)[:, None]  # (N, 1)
    # H = -sum_v p_v log p_v  =>  dz_j = dH * -p_j (log p_j + H)
    return -(p * (logp + H[:, None])) * dH, {}

"""Every random stream of a run, derived from its one seed. The only place streams are named.

    rng = seeds.generator(seed, "dropout")        # a numpy.random.Generator
    rng = seeds.generator(seed, "order", epoch)   # one per epoch: any epoch is rebuilt alone

A stream is ``numpy.random.SeedSequence(seed, spawn_key=(STREAMS[name], *keys))``:
what ``SeedSequence(seed).spawn(n)`` hands its children, addressed by name
instead of by position. Streams never share state, so changing how much one
consumer draws (a longer data set, more dropout) changes no other, and adding
a stream changes none. Each consumer owns its stream:

    stream          consumer
    init            the initial weights of a new model (T5.init in ``minillm train``)
    sft_data        the built-in suite's training examples for SFT (``minillm data``'s too)
    eval_data       the built-in suite's held-out examples (SFT, REINFORCE and ``minillm eval`` alike)
    rl_data         the built-in suite's training prompts for REINFORCE (not SFT's)
    held_out        which 5% of --data is held out when no --eval-data is given
    order           SFT's batch order and REINFORCE's prompt order, one stream per epoch
    dropout         SFT's dropout masks
    sampling        REINFORCE's k samples per prompt during training
    eval_sampling   the held-out sampled reward and KL of REINFORCE's evaluations
    generate        ``minillm generate`` / ``eval --do-sample``
    data_sample     which of --data's training examples a run reads when it needs fewer than the
                    file holds (its steps x examples a step)

The numbers are part of every saved run's meaning: never renumber them.
"""

from __future__ import annotations

import numpy as np

STREAMS: dict[str, int] = {
    "init": 1,
    "sft_data": 2,
    "eval_data": 3,
    "rl_data": 4,
    "held_out": 5,
    "order": 6,
    "dropout": 7,
    "sampling": 8,
    "eval_sampling": 9,
    "generate": 10,
    # 11 and 12 are the pretraining's (span_noise, held_out_noise)
    "data_sample": 13,
}


def sequence(seed: int, stream: str, *keys: int) -> np.random.SeedSequence:
    """The SeedSequence of ``stream`` (a name in ``STREAMS``) under ``seed``, sub-keyed by ``keys``."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; the streams are {', '.join(STREAMS)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"a seed is a non-negative integer, got {seed!r}")
    if any(isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0 for k in keys):
        raise ValueError(f"stream keys are non-negative integers, got {keys!r}")
    return np.random.SeedSequence(int(seed), spawn_key=(STREAMS[stream], *(int(k) for k in keys)))


def generator(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """A fresh ``numpy.random.Generator`` (PCG64) on ``stream`` under ``seed`` (see the module docstring)."""
    return np.random.default_rng(sequence(seed, stream, *keys))

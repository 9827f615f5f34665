"""Evaluation: the one place that decodes and scores a model, and the rewards that score outputs.

    decode.py    greedy / sampled outputs, cut at </s>, as text or as labels
    scores.py    loss, perplexity, exact match, BLEU, ROUGE, per task (evaluate_model, evaluate)
    policy.py    token log-probs, the KL to a reference, held-out reward (evaluate_policy)
    rewards.py   reward functions for REINFORCE
    report.py    the figures as small text tables
"""

from minillm.evaluation.decode import (
    decode_labels,
    decode_outputs,
    greedy_outputs,
    prompt_batch,
    sample_outputs,
    sampled_labels,
    strip_after_eos,
)
from minillm.evaluation.policy import evaluate_policy, policy_kl, token_logprobs
from minillm.evaluation.report import format_eval, format_policy_eval
from minillm.evaluation.scores import evaluate, evaluate_model, teacher_forced_nll, text_metrics

__all__ = [
    "decode_labels", "decode_outputs", "evaluate", "evaluate_model", "evaluate_policy",
    "format_eval", "format_policy_eval", "greedy_outputs", "policy_kl", "prompt_batch",
    "sample_outputs", "sampled_labels", "strip_after_eos", "teacher_forced_nll", "text_metrics",
    "token_logprobs",
]

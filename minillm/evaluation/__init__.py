"""Evaluation: the one place that decodes and scores a model, and the rewards that score outputs."""

from minillm.evaluation.evaluate import decode_outputs, evaluate_model, text_metrics
from minillm.evaluation.report import format_eval, format_policy_eval

__all__ = ["decode_outputs", "evaluate_model", "format_eval", "format_policy_eval", "text_metrics"]

"""Evaluation: the one place that decodes and scores a model, and the rewards that score outputs."""

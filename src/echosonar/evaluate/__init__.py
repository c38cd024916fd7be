"""Evaluation: classification metrics, report text metrics, GREEN-style faithfulness, EchoQA."""

"""Evaluation: task metrics of trained models and their inference speed."""

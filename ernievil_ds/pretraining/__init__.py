"""Pretraining under DeepSpeed: the loop, checkpoints, export and evaluation."""

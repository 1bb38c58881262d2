"""Pretraining: base models per (mixture, seed), their evaluation and the comparison of the mixtures."""

"""Finetuning: models finetuned per (finetune mixture, seed), their evaluation and comparison."""

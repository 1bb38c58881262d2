"""Dagster wrappers: read config, call ``chameleon_assets.core``, write, describe.

One folder per stage of the graph, in the order data flows:

* ``corpus/``: each domain's documents tokenised into train/val shards;
* ``mixing/``: the proxy, each domain's embedding, the affinity matrix, CHAMELEON's and
  the closed-form baselines' weights and their diagnostics;
* ``methods/``: the competitors that train their own proxies (DoReMi, DoGE, RegMix) and
  the table of every mixture base models can train on;
* ``models/``: base models per (mixture, seed), their evaluation and the comparison;
* ``finetune/``: the same for continued training on the finetuning domains.

Beside them, the machinery they share: what the graph observes (``sources``), how
partitions are defined (``partitions``), where values and artefacts live (``io``,
``values``), what is stale and what runs by itself (``policy``, ``sensors``), how a model
trains and what a model stage does (``launch``, ``stage``), MLflow (``tracking``), plots
and the project resource (``plots``, ``resources``); the asset checks over the stages'
results (``checks``).
"""

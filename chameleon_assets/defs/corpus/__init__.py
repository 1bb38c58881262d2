"""Each domain's documents tokenised into train and validation shards (``domain_corpus``, ``finetune_corpus``)."""

"""From domains to CHAMELEON's weights: the proxy, embeddings, affinity, weights and diagnostics."""

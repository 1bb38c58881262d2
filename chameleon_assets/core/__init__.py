"""The science, free of Dagster: data loading, tokenising, models, embeddings, KRLS."""

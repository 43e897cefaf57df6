"""The project's examples: the verified-example store, its vector index and embedder, retrieval text and
masking, the domain few-shot library, and example selection."""

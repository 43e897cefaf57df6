"""The model seam: the LLM protocol, chat messages, completions and adapter references (the backends that
implement it are infrastructure, in services.infra.llm)."""

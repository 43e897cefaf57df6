"""Model backends behind the core's LLM protocol (services.core.llm.base): llama.cpp GGUF, transformers +
peft, Ollama, OpenAI-compatible servers, a scripted model for pipeline tests; model files and base models."""

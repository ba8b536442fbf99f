"""Train TinyStories models on an exported dataset: tokenizer, GPT-Neo presets, data, loop."""

"""The Gradio web UI of LoRA EQ: a thin layer that only calls `adapters/` and `evals/`."""

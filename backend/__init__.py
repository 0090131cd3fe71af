"""SD Studio backend: everything that computes. Never imports gradio."""

"""SD Studio user interface: builds Gradio components and calls the backend engine."""

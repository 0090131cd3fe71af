"""The request schema: dataclasses, their fields' limits and vocabulary, and ``ValidationError``.

Imports nothing heavy (no torch, no diffusers); ``backend.schema.validate`` beside it checks requests.
"""

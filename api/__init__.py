"""The A1111 web UI's REST API (``/sdapi/v1``) on SD Studio's engine, for tools that speak it."""

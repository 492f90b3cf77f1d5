"""The HTTP side: pict-rs's validation endpoint, health, metrics, workers and review."""

"""Sweeping what is already stored: list a source, scan what is new or changed, act on rejects."""

"""Exception classes shared across fediguard. Each names one failure a caller can act on."""

from __future__ import annotations


class FediguardError(Exception):
    """Base class of every error fediguard raises on purpose."""


class ConfigError(FediguardError):
    """Invalid settings; the message names the setting."""


class MediaError(FediguardError):
    """The media cannot be decoded: corrupt, truncated, unsupported, empty or too large.

    The gateway turns this into the admin's fail policy (reason ``undecodable``).
    """


class DetectorError(FediguardError):
    """A detector failed on an input (crash inside the model or its pre-processing)."""


class DetectorUnavailable(FediguardError):
    """A detector cannot be loaded on this machine (missing package or model file)."""


class RecordError(FediguardError):
    """The records database failed (locked, full, read-only, down or corrupt); the message names
    the setting (``database_url``, ``data_dir``) and the database's own error. On an upload's way to
    a verdict it is answered by the fail policy (reason ``record_error``)."""

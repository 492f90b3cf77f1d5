"""The one typed settings object, read from defaults, an optional TOML file and ``FEDIGUARD_*``
environment variables (later sources win), validated at start-up with messages naming the setting
and where its value came from (the file and key, or the variable).

The TOML file is ``--config``, else ``$FEDIGUARD_CONFIG``, else the first that exists of
:func:`config_search_path`; relative paths in it are relative to its folder, so every command reads
the same data directory wherever it is run from.

:mod:`~fediguard.config.settings` holds the settings and their checks, :mod:`~fediguard.config.loading`
where they are read from, :mod:`~fediguard.config.credentials` the client tokens and worker keys
among them. Import any of them from here.
"""

from fediguard.config.credentials import Credential, match_credential
from fediguard.config.loading import CONFIG_SEARCH_PATH, config_search_path, find_config_file, load_settings
from fediguard.config.settings import (
    ENV_PREFIX,
    EVIDENCE_LABELS,
    IN_PROCESS_SCANNERS,
    LOCAL_SLOT_PREFIX,
    MEGABYTE,
    ClientPolicy,
    IPNetwork,
    Settings,
    is_in_process_scanner,
    mask_url,
)

__all__ = [
    "CONFIG_SEARCH_PATH",
    "ENV_PREFIX",
    "EVIDENCE_LABELS",
    "IN_PROCESS_SCANNERS",
    "LOCAL_SLOT_PREFIX",
    "MEGABYTE",
    "ClientPolicy",
    "Credential",
    "IPNetwork",
    "Settings",
    "config_search_path",
    "find_config_file",
    "is_in_process_scanner",
    "load_settings",
    "mask_url",
    "match_credential",
]

"""Where the settings are read from: the TOML file (``--config``, else ``$FEDIGUARD_CONFIG``, else the
first of :func:`config_search_path` that exists), ``FEDIGUARD_*`` environment variables (warning
about unknown ones) and explicit overrides, validated into :class:`~fediguard.config.settings.Settings`
with messages naming the setting and where its value came from."""

from __future__ import annotations

import difflib
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fediguard.config.settings import ENV_PREFIX, Settings
from fediguard.errors import ConfigError

log = logging.getLogger("fediguard.config")


CONFIG_SEARCH_PATH = (
    "./fediguard.toml, $XDG_CONFIG_HOME/fediguard/fediguard.toml, /etc/fediguard/fediguard.toml"
)
"""Where the TOML file is looked for when neither ``--config`` nor ``FEDIGUARD_CONFIG`` names one."""

_PATH_SETTINGS = frozenset(
    name for name, field in Settings.model_fields.items() if "Path" in str(field.annotation)
)
"""Settings that are file or folder paths: relative ones in a TOML file are relative to its folder."""

_SERVICE_LINK = re.compile(
    r"FEDIGUARD_(?:\w+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_\w+)?|PORT_\d+_(?:TCP|UDP|SCTP)(?:_\w+)?)"
)
"""Variables Kubernetes injects into every pod for a Service named ``fediguard`` (or
``fediguard-…``): ``FEDIGUARD_SERVICE_HOST``, ``FEDIGUARD_PORT_14051_TCP_ADDR`` and so on."""

_NOT_OURS = re.compile(r"^(?:tcp|udp|sctp)://", re.IGNORECASE)
"""A service address as Kubernetes and Docker links write them (``FEDIGUARD_PORT=tcp://IP:PORT``):
never a value of any setting."""

_EXPLAINED = {
    "FEDIGUARD_TOKEN": "the example compose .env uses it only to build FEDIGUARD_CLIENT_TOKENS "
    "(pictrs:${FEDIGUARD_TOKEN}) and pict-rs's validation URL; fediguard reads FEDIGUARD_CLIENT_TOKENS",
}
"""Names an admin is likely to set that are not settings, with what to set instead."""


def config_search_path(environ: Mapping[str, str]) -> list[Path]:
    """The files looked for, in order, when neither ``--config`` nor ``FEDIGUARD_CONFIG`` names one."""
    paths = [Path("fediguard.toml")]
    config_home = environ.get("XDG_CONFIG_HOME") or (
        str(Path(environ["HOME"]) / ".config") if environ.get("HOME") else ""
    )
    if config_home:
        paths.append(Path(config_home) / "fediguard" / "fediguard.toml")
    paths.append(Path("/etc/fediguard/fediguard.toml"))
    return paths


def find_config_file(config_file: Path | None, environ: Mapping[str, str]) -> Path | None:
    """``config_file``, else ``$FEDIGUARD_CONFIG``, else the first file of the search path that
    exists (None: there is none)."""
    if config_file is not None:
        return config_file
    if environ.get("FEDIGUARD_CONFIG"):
        return Path(environ["FEDIGUARD_CONFIG"])
    return next((path.absolute() for path in config_search_path(environ) if path.is_file()), None)


def _from_env(environ: Mapping[str, str], warnings: list[str]) -> dict[str, str]:
    known = set(Settings.model_fields)
    values: dict[str, str] = {}
    injected: list[str] = []
    for key, value in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name == "config":
            continue
        if name in known:
            if _NOT_OURS.match(value.strip()):
                raise ConfigError(_not_ours(key, value))
            values[name] = value
        elif _SERVICE_LINK.fullmatch(key):
            injected.append(key)
        elif key in _EXPLAINED:
            warnings.append(f"{key} is not a fediguard setting and is ignored: {_EXPLAINED[key]}")
        else:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {ENV_PREFIX}{near[0].upper()}? " if near else ""
            warnings.append(
                f"unknown setting {key} is ignored ({hint}`fediguard config` shows the known ones)"
            )
    if injected:
        warnings.append(
            f"ignoring {', '.join(injected)}: variables Kubernetes sets for a Service named like "
            "fediguard, not settings"
        )
    return values


def _not_ours(key: str, value: str) -> str:
    return (
        f"{key}={value!r} is a service address, not a value fediguard set: Kubernetes puts "
        f"{key.removesuffix('_PORT')}_PORT=tcp://IP:PORT into every pod of a namespace with a Service "
        "named like fediguard (Docker's --link does the same for a linked container). Set "
        f"{key} to the value fediguard should use in the container's environment, or stop the "
        "injection (`enableServiceLinks: false` in the pod spec, or another name for the Service)"
    )


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's settings, with relative paths made relative to the file's folder."""
    try:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    folder = path.resolve().parent
    for name in _PATH_SETTINGS & set(values):
        if isinstance(values[name], str) and values[name] and not Path(values[name]).is_absolute():
            values[name] = str(folder / values[name])
    return values


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read the settings: defaults < TOML file < environment < explicit overrides (CLI flags).

    The TOML file is ``config_file``, else ``$FEDIGUARD_CONFIG``, else the first of
    :func:`config_search_path` that exists. Raises ConfigError naming the setting and where its
    value came from. Unknown ``FEDIGUARD_*`` variables are warnings: appended to ``warnings`` when
    given, else logged.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    path = find_config_file(config_file, env)
    if path is not None:
        values.update(_read_toml(path))
        origin.update({name: f"in {path}" for name in values})
    notes: list[str] = [] if warnings is None else warnings
    from_env = _from_env(env, notes)
    if warnings is None:
        for note in notes:
            log.warning("%s", note)
    values.update(from_env)
    origin.update({name: f"env {ENV_PREFIX}{name.upper()}" for name in from_env})
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    origin.update({name: "command line" for name in given})
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(_problems(exc, origin, path))) from exc
    settings._config_file = path
    return settings


def _problems(exc: ValidationError, origin: Mapping[str, str], path: Path | None) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        if not loc:  # a check of several settings together: its message names them
            problems.append(str(err["msg"]))
            continue
        name = loc[0]
        where = origin.get(name, "default")
        if err["type"] == "extra_forbidden" and len(loc) == 1:
            problems.append(f"unknown key {name!r} {where} (`fediguard config` shows the known ones)")
            continue
        problems.append(f"{'.'.join(loc)} ({where}): {err['msg']}")
    return problems

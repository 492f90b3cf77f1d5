"""The one place that knows which detectors exist and how to build them from settings.

A name in ``settings.detectors`` is either a built-in below or ``package.module:factory`` for a
plugin; a factory takes the :class:`~fediguard.config.Settings` and returns a
:class:`~fediguard.detectors.base.Detector`. Built-ins import their module only when used, so a
missing optional model costs nothing until it is configured.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from fediguard.config import Settings
from fediguard.detectors.base import Detector
from fediguard.errors import ConfigError, DetectorUnavailable

DetectorFactory = Callable[[Settings], Detector]


def _hashlist(settings: Settings) -> Detector:
    from fediguard.detectors.hashlist import HashListDetector

    return HashListDetector(deny_file=settings.hashlist_deny_file, allow_file=settings.hashlist_allow_file)


def _nudity(settings: Settings) -> Detector:
    from fediguard.detectors.nudity import NudityDetector

    return NudityDetector(threads=settings.onnx_threads, model_path=settings.nudity_model)


def _age(settings: Settings) -> Detector:
    from fediguard.detectors.age import AgeDetector

    return AgeDetector(threads=settings.onnx_threads, age_model=settings.age_model)


def _embedding(settings: Settings) -> Detector:
    from fediguard.detectors.embedding import EmbeddingDetector

    return EmbeddingDetector(
        settings.embedding_model, settings.embedding_concepts, threads=settings.onnx_threads
    )


BUILTIN: dict[str, DetectorFactory] = {
    "hashlist": _hashlist,
    "nudity": _nudity,
    "age": _age,
    "embedding": _embedding,
}


def factory_for(name: str) -> DetectorFactory:
    """The factory behind a configured detector name; ConfigError when it names nothing."""
    if name in BUILTIN:
        return BUILTIN[name]
    module_name, sep, attr = name.partition(":")
    if not sep:
        raise ConfigError(f"unknown detector {name!r} in detectors; built-in: {', '.join(BUILTIN)}")
    try:
        module = importlib.import_module(module_name)
        found: DetectorFactory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"detector plugin {name!r} cannot be loaded: {exc}") from exc
    return found


def check_detectors(settings: Settings) -> None:
    """Before a server starts: every configured detector resolves and every hash-list file reads,
    so a mistake stops start-up with a message naming the setting (not a traceback mid-start)."""
    for name in settings.detectors:
        factory_for(name)
    if "hashlist" in settings.detectors:
        from fediguard.detectors.hashlist import load_hash_file

        for setting in ("hashlist_deny_file", "hashlist_allow_file"):
            path = getattr(settings, setting)
            if path is not None:
                try:
                    load_hash_file(path)
                except ConfigError as exc:
                    raise ConfigError(f"{setting}: {exc}") from exc


def build_detectors(settings: Settings, names: Sequence[str] | None = None) -> list[Detector]:
    """New detector instances (one set per scanner thread), cheapest first."""
    detectors: list[Detector] = []
    for name in names if names is not None else settings.detectors:
        try:
            detectors.append(factory_for(name)(settings))
        except ImportError as exc:
            raise DetectorUnavailable(f"detector {name!r} needs a package that is missing: {exc}") from exc
    return sorted(detectors, key=lambda d: d.cost)


def fingerprint(detectors: Sequence[Detector]) -> str:
    """Names and versions of a detector set: workers must match it, and cached verdicts are tied to it."""
    return ",".join(f"{d.name}@{d.version}" for d in sorted(detectors, key=lambda d: d.name))

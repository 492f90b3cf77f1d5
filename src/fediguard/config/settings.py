"""The one typed settings object: every setting, its default and its checks (read by
:mod:`~fediguard.config.loading`)."""

from __future__ import annotations

import ipaddress
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fediguard.config.credentials import Credential

# The validators below call these by the names they had when they lived in this module.
from fediguard.config.credentials import parse_credentials as _parse_credentials
from fediguard.config.credentials import split_list as _split_list
from fediguard.verdicts import LABELS, REVIEW, FailPolicy, PolicyConfig

ENV_PREFIX = "FEDIGUARD_"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


IN_PROCESS_SCANNERS = frozenset({"local", "gateway", "cache", "probe", "-"})
"""Scanner names the gateway gives its own work (records' ``scanner`` column), besides the slots."""
LOCAL_SLOT_PREFIX = "scanner-"
"""In-process scanner slots are named ``scanner-0``, ``scanner-1``, …"""


def is_in_process_scanner(name: str) -> bool:
    """Whether a recorded scanner name is the gateway's own work, never a remote worker's (worker key
    names may not look like one: :class:`Settings` refuses them)."""
    return name in IN_PROCESS_SCANNERS or name.startswith(LOCAL_SLOT_PREFIX)


MEGABYTE = 1024 * 1024
"""pict-rs's megabyte (``max_file_size = 40`` is 41,943,040 bytes); ``max_body_mb`` uses the same."""


EVIDENCE_LABELS = tuple(dict.fromkeys((*LABELS, REVIEW, "unscanned")))
"""What ``evidence_labels`` may name: a decision's labels, and the verdict ``unscanned``."""


class ClientPolicy(BaseModel):
    """Policy settings that differ for one client (by its token name, or ``ip:ADDRESS``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reject_labels: list[str] | None = None
    explicit_threshold: float | None = Field(None, ge=0, le=1)
    minor_age: float | None = Field(None, ge=0, le=100)
    age_uncertainty_factor: float | None = Field(None, ge=0, le=5)

    @field_validator("reject_labels", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return _split_list(value)


class Settings(BaseModel):
    """Every setting fediguard reads. Environment variable = ``FEDIGUARD_`` + the upper-case name;
    TOML key = the name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- gateway -------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(14051, ge=0, le=65535)
    client_tokens: list[Credential] = Field(default_factory=list)
    allowed_cidrs: list[IPNetwork] = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    )
    forwarded_allow_ips: str | None = None
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    fail_policy: FailPolicy = FailPolicy.CLOSED
    deadline_s: float = Field(8.0, gt=0, le=300)
    max_body_mb: float = Field(40.0, gt=0, le=1024)
    body_idle_timeout_s: float = Field(10.0, gt=0, le=300)
    body_timeout_s: float = Field(20.0, gt=0, le=3600)
    log_level: str = "INFO"
    keep_alive_s: int = Field(120, ge=1, le=3600)
    """Seconds an idle keep-alive connection stays open: longer than pict-rs keeps pooled connections
    (about 90 s; it does not retry when it reuses one the server has just closed)."""

    # --- scanning --------------------------------------------------------------------------------
    local_scanner: bool = True
    scanner_threads: int = Field(2, ge=1, le=64)
    queue_max: int = Field(64, ge=1, le=100_000)
    detectors: list[str] = Field(default_factory=lambda: ["nudity", "age"])
    onnx_threads: int = Field(1, ge=1, le=64)
    sample_frames: int = Field(16, ge=1, le=900)
    max_pixels: int = Field(50_000_000, ge=1)
    max_frame_side: int = Field(1280, ge=64, le=8192)
    decode_sandbox: bool = True
    decode_memory_mb: int = Field(1536, ge=512, le=1_048_576)
    decode_cpu_s: float = Field(8.0, gt=0, le=3600)
    decode_timeout_s: float = Field(12.0, gt=0, le=3600)
    nudity_model: Path | None = None
    age_model: Path | None = None
    embedding_model: Path | None = None
    embedding_concepts: Path | None = None
    hashlist_deny_file: Path | None = None
    hashlist_allow_file: Path | None = None
    banks: bool = True
    bank_refresh_s: float = Field(5.0, gt=0, le=3600)
    pdq_max_distance: int = Field(31, ge=0, le=128)
    pdq_dihedral: bool = False
    feed_key_file: Path | None = None
    feed_poll_s: float = Field(60.0, gt=0, le=86_400)
    verdict_cache: bool = True
    worker_keys: list[Credential] = Field(default_factory=list)
    lease_s: float = Field(5.0, gt=0, le=3600)
    legacy_lease_margin_s: float = Field(0.5, ge=0, le=60)
    """A fedi-safety worker holds a job until the upload's deadline minus this (its protocol cannot
    renew a lease): what is left for the gateway to answer with the fail policy if it never answers."""
    legacy_frames: int = Field(8, ge=1, le=900)
    """Frames of a video or an animation (or the one of an AVIF/JXL still) a fedi-safety worker is
    given as JPEG stills, one job each, spread over the whole (first and last included)."""
    legacy_lease_s: float | None = Field(None, gt=0, le=3600)
    """No longer used (replaced by ``legacy_lease_margin_s``); accepted, with a warning, so an old
    configuration still starts."""

    # --- remote worker (`fediguard worker`) -------------------------------------------------------
    worker_server: str | None = None
    worker_key: str | None = None
    worker_concurrency: int = Field(1, ge=1, le=64)
    worker_ca_file: Path | None = None

    # --- policy ----------------------------------------------------------------------------------
    reject_labels: list[str] = Field(default_factory=lambda: ["csam_suspect", "denylisted"])
    explicit_threshold: float = Field(0.5, ge=0, le=1)
    minor_age: float = Field(18.0, ge=0, le=100)
    age_uncertainty_factor: float = Field(1.0, ge=0, le=5)
    screening_threshold: float = Field(0.3, ge=0, le=1)
    client_policies: dict[str, ClientPolicy] = Field(default_factory=dict)

    # --- records ---------------------------------------------------------------------------------
    data_dir: Path = Path("fediguard-data")
    database_url: str | None = None
    db_busy_timeout_s: float = Field(2.0, gt=0, le=60)
    """How long the gateway's writes wait for a locked database (SQLite's busy timeout, PostgreSQL's
    lock_timeout) before its decisions go to the spool; keep it well under ``deadline_s``."""

    _config_file: Path | None = PrivateAttr(default=None)
    """The TOML file these settings were read from, if any."""

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from (None: defaults and environment only)."""
        return self._config_file

    # --- the review desk and sealed evidence (fediguard.desk, fediguard.evidence) ----------------
    desk: bool = True
    desk_host: str = "127.0.0.1"
    desk_port: int = Field(14052, ge=0, le=65535)
    desk_secret: str | None = Field(None, min_length=32)
    desk_session_s: float = Field(8 * 3600.0, gt=0, le=7 * 86400)
    desk_claim_s: float = Field(900.0, gt=0, le=86400)
    evidence_labels: list[str] = Field(default_factory=list)
    evidence_dir: Path | None = None
    evidence_recipient: str | None = None
    evidence_retention_days: float = Field(90.0, gt=0, le=36500)
    pictrs_url: str | None = None  # the desk's "purge from pict-rs" (docs/desk.md), with its API key:
    pictrs_api_key: SecretStr | None = None  # pict-rs's server.api_key; masked in `fediguard config`

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together (the certificate and its key)")
        for name in ("tls_certfile", "tls_keyfile", "worker_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

    @field_validator("legacy_lease_margin_s")
    @classmethod
    def _legacy_margin(cls, value: float, info: ValidationInfo) -> float:
        deadline = info.data.get("deadline_s")
        if deadline is not None and value >= deadline:
            raise ValueError(
                f"must be less than deadline_s ({deadline:g}), or fedi-safety workers never get a job"
            )
        return value

    @model_validator(mode="after")
    def _model_files(self) -> Settings:
        for name in ("nudity_model", "age_model", "embedding_model", "embedding_concepts"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

    @model_validator(mode="after")
    def _screening_below_explicit(self) -> Settings:
        thresholds = {"explicit_threshold": self.explicit_threshold}
        for client, policy in self.client_policies.items():
            if policy.explicit_threshold is not None:
                thresholds[f"client_policies.{client}.explicit_threshold"] = policy.explicit_threshold
        for name, value in thresholds.items():
            if self.screening_threshold > value:
                raise ValueError(
                    f"screening_threshold ({self.screening_threshold}) is above {name} ({value}): the age "
                    "model would skip frames the policy counts as explicit; lower it (0 turns screening off)"
                )
        return self

    @field_validator("client_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> list[Credential]:
        return _parse_credentials(value, "client token", name_required=False)

    @field_validator("worker_keys", mode="before")
    @classmethod
    def _worker_keys(cls, value: Any) -> list[Credential]:
        keys = _parse_credentials(value, "worker key", name_required=True)
        for key in keys:
            if is_in_process_scanner(key.name):
                raise ValueError(
                    f"worker key name {key.name!r} is reserved for the gateway's own scanners "
                    f"({', '.join(sorted(IN_PROCESS_SCANNERS))}, {LOCAL_SLOT_PREFIX}N)"
                )
        return keys

    @field_validator("allowed_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: Any) -> list[IPNetwork]:
        return [ipaddress.ip_network(str(v), strict=False) for v in _split_list(value)]

    @field_validator("evidence_labels", mode="before")
    @classmethod
    def _evidence_labels(cls, value: Any) -> list[str]:
        labels = [str(v) for v in _split_list(value)]
        unknown = sorted(set(labels) - set(EVIDENCE_LABELS))
        if unknown:
            raise ValueError(f"unknown label(s) {unknown}; known: {sorted(EVIDENCE_LABELS)}")
        return labels

    @property
    def effective_evidence_dir(self) -> Path:
        """Where sealed evidence and the evidence key files live (``evidence_dir``, or data_dir/evidence)."""
        return self.evidence_dir if self.evidence_dir is not None else self.data_dir / "evidence"

    @field_validator("detectors", "reject_labels", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("reject_labels")
    @classmethod
    def _known_labels(cls, value: list[str]) -> list[str]:
        _check_labels(value)
        return value

    @field_validator("client_policies", mode="before")
    @classmethod
    def _client_policies(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: a JSON object
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object: {exc}") from exc
        return value

    @field_validator("client_policies")
    @classmethod
    def _client_labels(cls, value: dict[str, ClientPolicy]) -> dict[str, ClientPolicy]:
        for policy in value.values():
            _check_labels(policy.reject_labels or [])
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @cached_property
    def policy(self) -> PolicyConfig:
        """The policy's settings for every client without overrides of its own."""
        return PolicyConfig(
            reject_labels=frozenset(self.reject_labels),
            explicit_threshold=self.explicit_threshold,
            minor_age=self.minor_age,
            age_uncertainty_factor=self.age_uncertainty_factor,
        )

    def policy_for(self, client: str) -> PolicyConfig:
        """The policy's settings for this client: :attr:`policy` with its ``client_policies``
        overrides applied, if it has any."""
        base = self.policy
        override = self.client_policies.get(client)
        if override is None:
            return base
        return PolicyConfig(
            reject_labels=frozenset(override.reject_labels)
            if override.reject_labels is not None
            else base.reject_labels,
            explicit_threshold=_pick(override.explicit_threshold, base.explicit_threshold),
            minor_age=_pick(override.minor_age, base.minor_age),
            age_uncertainty_factor=_pick(override.age_uncertainty_factor, base.age_uncertainty_factor),
        )

    @property
    def max_body_bytes(self) -> int:
        """In pict-rs's unit: its ``max_file_size`` megabytes are 1024 * 1024 bytes."""
        return int(self.max_body_mb * MEGABYTE)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'fediguard.sqlite3'}"

    @property
    def effective_feed_key_file(self) -> Path:
        """The Ed25519 key that signs this gateway's feeds (``fediguard feed keygen`` writes it)."""
        return self.feed_key_file or self.data_dir / "feed-ed25519.pem"

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with every secret replaced by ``***``."""
        data = self.model_dump(mode="json")
        data["client_tokens"] = [f"{c.name}:***" for c in self.client_tokens]
        data["worker_keys"] = [f"{c.name}:***" for c in self.worker_keys]
        data["worker_key"] = "***" if self.worker_key else None
        data["database_url"] = _mask_url(self.effective_database_url)
        data["config_file"] = str(self._config_file) if self._config_file else None
        data["desk_secret"] = "***" if self.desk_secret else None
        return data


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


def _check_labels(labels: list[str]) -> None:
    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise ValueError(f"unknown label(s) {unknown}; known: {sorted(LABELS)}")


def mask_url(url: str) -> str:
    """A database URL as it may be shown: its password hidden."""
    return _mask_url(url)


def _mask_url(url: str) -> str:
    """The URL with its password hidden, whether in the user info or in the query
    (``?password=``, as libpq and SQLAlchemy accept)."""
    url = _SECRET_QUERY.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else url


_SECRET_QUERY = re.compile(r"([?&](?:password|sslpassword)=)[^&#]*", re.IGNORECASE)

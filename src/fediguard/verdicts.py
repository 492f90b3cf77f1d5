"""The verdict vocabulary every part of fediguard speaks: what a decision is, the labels a policy
gives, why no verdict could be reached, and what the admin's fail policy answers then.

No logic beyond building a decision lives here, so any module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    REJECT = "reject"
    UNSCANNED = "unscanned"


class FailReason(StrEnum):
    """Why no verdict could be reached; each is answered by the admin's fail policy."""

    DEADLINE = "deadline"
    QUEUE_FULL = "queue_full"
    NO_SCANNER = "no_scanner"
    SCANNER_ERROR = "scanner_error"
    UNDECODABLE = "undecodable"
    TOO_LARGE = "too_large"
    BODY_TIMEOUT = "body_timeout"
    """The body did not arrive in time: no bytes for ``body_idle_timeout_s``, or not all of it
    within ``body_timeout_s``."""
    CLIENT_DISCONNECT = "client_disconnect"
    """The client hung up before its whole body arrived: recorded, though nobody hears the answer."""
    RECORD_ERROR = "record_error"
    """The records database failed on the way to a verdict (a verdict-cache or bank lookup): locked,
    full, read-only, down or corrupt."""


class FailPolicy(StrEnum):
    """What the gateway answers when it cannot reach a verdict in time."""

    OPEN = "open"
    CLOSED = "closed"


CSAM_SUSPECT = "csam_suspect"
NSFW = "nsfw"
DENYLISTED = "denylisted"
ALLOWLISTED = "allowlisted"
REVIEW = "review"

LABELS: tuple[str, ...] = (CSAM_SUSPECT, NSFW, DENYLISTED, REVIEW)
"""Labels an admin may list in ``reject_labels``. ``allowlisted`` is not among them: it always passes.
``review``: explicit, with a face that may be a minor's but evidence too weak for ``csam_suspect``
(the face too small or blurred to age, not linkable to the body, seen by one face finder only, or a
minor only within the age model's uncertainty), or a match of a bank that only flags; recorded and
counted, rejected only when listed."""


POLICY_VERSION = "2"
"""Bump when :func:`fediguard.policy.decide` reasons differently over the same findings: cached
verdicts made under another version are not reused."""


@dataclass(frozen=True)
class PolicyConfig:
    """The settings a verdict depends on (:func:`fediguard.policy.decide` reads them); built by
    :meth:`fediguard.config.Settings.policy_for`."""

    reject_labels: frozenset[str] = frozenset({CSAM_SUSPECT, DENYLISTED})
    explicit_threshold: float = 0.5
    minor_age: float = 18.0
    age_uncertainty_factor: float = 1.0

    def fingerprint(self) -> str:
        """Changes whenever a setting that affects verdicts changes (for cached decisions)."""
        return (
            f"policy={POLICY_VERSION};"
            f"reject={','.join(sorted(self.reject_labels))};explicit={self.explicit_threshold};"
            f"minor={self.minor_age};k={self.age_uncertainty_factor}"
        )


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    labels: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    fail_reason: FailReason | None = None
    fail_policy: FailPolicy | None = None


def fail_decision(reason: FailReason, policy: FailPolicy, detail: str) -> Decision:
    """The admin's fail policy applied to a case where no verdict could be reached."""
    text = f"no verdict ({reason.value}): {detail}; fail-{policy.value} policy applied"
    return Decision(Verdict.UNSCANNED, (), (text,), reason, policy)

"""Prometheus metrics. One registry per app instance, so several apps can live in one process."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "fediguard_decisions",
            "Decisions made, by source, verdict and the fail policy that applied (none when scanned).",
            ["source", "verdict", "policy"],
            registry=self.registry,
        )
        self.fail_policy = Counter(
            "fediguard_fail_policy_applied",
            "Times the fail policy decided because no verdict could be reached, by reason and policy.",
            ["reason", "policy"],
            registry=self.registry,
        )
        self.labels = Counter(
            "fediguard_labels", "Labels found in scanned media.", ["label"], registry=self.registry
        )
        self.auth_failures = Counter(
            "fediguard_auth_failures",
            "Requests refused for their credentials.",
            ["kind"],
            registry=self.registry,
        )
        self.bad_requests = Counter(
            "fediguard_bad_requests", "Requests refused before scanning.", ["reason"], registry=self.registry
        )
        self.stage_seconds = Histogram(
            "fediguard_stage_seconds",
            "Time spent per stage of a decision.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.record_failures = Counter(
            "fediguard_record_failures",
            "Decisions answered but not recorded (database error).",
            registry=self.registry,
        )
        self.database_errors = Counter(
            "fediguard_database_errors",
            "Errors from the records database: writing decisions (record) or looking up the verdict "
            "cache and banks on an upload's way to a verdict (lookup, answered by the fail policy).",
            ["where"],
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            "fediguard_spool_depth",
            "Decisions kept in the local spool (data_dir/spool) until the records database takes them.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "fediguard_queue_depth", "Jobs waiting for a scanner.", registry=self.registry
        )
        self.scanners = Gauge(
            "fediguard_scanners",
            "Scanners known to the queue, by kind and state.",
            ["kind", "state"],
            registry=self.registry,
        )
        self.worker_jobs = Counter(
            "fediguard_worker_jobs",
            "Jobs each scanner (in-process slot or remote worker) finished (completed) or let its lease "
            "expire on (expired).",
            ["scanner", "outcome"],
            registry=self.registry,
        )
        self.worker_last_seen = Gauge(
            "fediguard_worker_last_seen_seconds",
            "Unix time each scanner was last seen.",
            ["scanner"],
            registry=self.registry,
        )
        self.requeued = Gauge(
            "fediguard_jobs_requeued", "Jobs put back after a lease expired.", registry=self.registry
        )
        self.bank_matches = Counter(
            "fediguard_bank_matches",
            "Decisions a bank entry matched, by bank kind and whether the entry was in force or "
            "suspended (its match went to review).",
            ["kind", "entry"],
            registry=self.registry,
        )
        self.bank_suspensions = Counter(
            "fediguard_bank_entries_suspended",
            "Bank entries the flood guard suspended (too many distinct uploads matched in its window).",
            ["bank"],
            registry=self.registry,
        )
        self.bank_alerts_open = Gauge(
            "fediguard_bank_alerts_open",
            "Bank alerts (suspended entries) no admin has resolved yet, as of the last bank reload.",
            registry=self.registry,
        )
        self.rematches = Counter(
            "fediguard_rematches",
            "Recorded decisions a bank entry added later matches (retroactive matching), by the "
            "decision's source (gateway, sweep, scan).",
            ["source"],
            registry=self.registry,
        )
        self._collect_hooks: list[Callable[[], None]] = []

    def on_collect(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` before each scrape (to refresh gauges from live state)."""
        self._collect_hooks.append(hook)

    def observe_timings(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stage_seconds.labels(stage).observe(seconds)

    def render(self) -> bytes:
        for hook in self._collect_hooks:
            hook()
        return generate_latest(self.registry)

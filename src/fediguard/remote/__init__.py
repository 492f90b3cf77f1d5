"""Remote scanning: workers that lease jobs from a gateway over HTTP(S) and post back findings.

- :mod:`~fediguard.remote.protocol` — the wire format both sides share (paths, headers, codecs);
- :mod:`~fediguard.remote.client` — the worker process (`fediguard worker`): outbound HTTP only;
- :mod:`~fediguard.remote.routes` — the gateway's side of the native protocol;
- :mod:`~fediguard.remote.legacy` — the gateway's fedi-safety (pictrs-safety) compatible routes;
- :mod:`~fediguard.remote.checks` — what a remote result must satisfy before the gateway takes it.

The worker process imports none of the gateway's, the records' or the metrics' code.
"""

"""Hash banks: lists of known-bad images (deny) and overturned false positives (allow).

Pure, in-memory building blocks; storing banks in the database and the CLI build on them.

* :mod:`~fediguard.banks.pdq` computes and compares PDQ perceptual hashes.
* :mod:`~fediguard.banks.index` finds bank entries near a PDQ hash (exact, thread-safe, ~0.2 ms at 1 M).
* :mod:`~fediguard.banks.sha256` looks up byte-identical copies by SHA-256.
* :mod:`~fediguard.banks.formats` reads and writes bank files (fediguard CSV, ThreatExchange signal lists).
"""

"""Research: the accuracy studies behind docs/results*.md (``pursuit bench``, ``bench20q``,
``bench-kb``) and their report. Research imports the service, never the reverse.

Performance benchmarks (throughput, capacity, latency) are another thing and live in the
top-level ``benchmarks/``.
"""

"""Benchmark reports: plots drawn from metric results, the report writer, ``fastsim benchmark`` and a
Lightning callback logging the same observables during training.

- :mod:`fastsim.report.report`: input checks, streamed collection, metrics, metrics.json/report.md.
- :mod:`fastsim.report.plots`: matplotlib figures from the results dict.
- :mod:`fastsim.report.cli`: ``fastsim benchmark``.
- :mod:`fastsim.report.callback`: :class:`BenchmarkCallback` (imports lightning).
"""

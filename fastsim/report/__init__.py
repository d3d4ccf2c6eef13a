"""Benchmark reports: the typed result, plots drawn from it, the report writer, ``fastsim benchmark``
and a Lightning callback logging the same observables during training.

- :mod:`fastsim.report.report`: :func:`~fastsim.report.report.run_benchmark`, the files written.
- :mod:`fastsim.report.tolerances`, :mod:`fastsim.report.inputs`, :mod:`fastsim.report.collect`,
  :mod:`fastsim.report.assemble`, :mod:`fastsim.report.render`: its stages (pass/fail thresholds,
  input checks, the streamed pass, metric assembly, Markdown/HTML).
- :mod:`fastsim.report.result`: :class:`~fastsim.report.result.BenchmarkResult` and its parts,
  ``metrics.json`` (versioned) and :func:`~fastsim.report.result.load_result`.
- :mod:`fastsim.report.plots`: matplotlib figures from the result.
- :mod:`fastsim.report.cli`: ``fastsim benchmark``.
- :mod:`fastsim.report.callback`: :class:`BenchmarkCallback` (imports lightning; ``fastsim fit
  --benchmark.reference``).
"""

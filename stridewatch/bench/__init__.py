"""``stridewatch bench``: the scaling questions in one run (docs/benchmarks.md).

Parts, one module each: ``core`` (the pure step per live batch, short and long history),
``stream`` (the stream stage alone: the StrideWatch worker, Quix Streams, a plain consume
loop, on the same pre-filled records), ``live`` (the whole stack at a fixed rate),
``scaleout`` (one worker against two). ``workload`` plans the simulated runners and holds
:func:`~stridewatch.bench.workload.bridge_records`; ``core`` holds
:func:`~stridewatch.bench.core.step_as_worker`: the two places that know the record layout
and the worker's state, to swap when those change.
"""

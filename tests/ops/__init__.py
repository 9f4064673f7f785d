"""The op test harness: every engine primitive, on every backend this build runs.

Each op family has a table of cases (`cases_elementwise`, `cases_reduce`, `cases_layout`,
`cases_conv`, `cases_effects`, `cases_errors`); `harness` runs a case and `test_ops` runs
every case on every backend, with a coverage test that fails when an op has no case.
`test_graphs` holds the checks that span several ops (autodiff across a graph, plan rewrites,
thread-count independence, run-time input validation).

Adding an op: add its cases to the family's table (a new family gets a `cases_*.py` module,
listed in `test_ops.py`).
"""

"""InferStack benchmarks: `python -m benchmarks.run [--quick] [--only NAME ...]`.

Every target is checked as a ratio of a candidate and a baseline measured side by side
in one run (interleaved, repeated, medians and spread), never as a timed assertion.
Results land in benchmarks/results/<name>.json; benchmarks/RESULTS.md is generated
from those files by run.py.
"""

"""The model lifecycle: an upload becomes a validated, immutable release that rolls out.

bundle (what one upload holds) -> validate (the gate `inferstack validate` and the promoter
both run) -> store (artifacts, manifests, status history, the live pointer in S3) ->
promote/rollout (move a target to a release, or back).

Serving code never imports this package: the inference image stays small and its cold
start fast (tests/unit/test_import_boundaries.py).
"""

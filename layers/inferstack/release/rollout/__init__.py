"""Moving one target (Lambda, SageMaker, ECS) to a release, and knowing when it got there.

Each target has `start(release)`, which begins the move and returns a progress record, and
`check(progress)`, which says whether it is still under way, done, or failed (and why). A
Lambda move finishes inside `start`; SageMaker and ECS moves take minutes, so nothing waits
on them in one invocation: the orchestration checks again later.
"""

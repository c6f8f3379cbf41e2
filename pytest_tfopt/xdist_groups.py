"""Under ``pytest -n N --dist loadgroup``: the tests of one variant on one backend go to one xdist worker.

That worker builds (or loads) the artifact once; the other workers need not load TensorFlow or the source model
for it. pytest-xdist's own ``loadgroup`` reads ``xdist_group`` markers by renaming node ids, which pytest 9.2's
node ids no longer allow, so this scheduler groups by what the node id already says: the ``[<variant>-<backend>]``
part that the plugin's parametrization writes. Tests that name no tfopt variant run as under ``--dist load``
(each on its own); an id that still carries an ``@group`` suffix (older pytest) keeps xdist's meaning.
"""

from __future__ import annotations

from typing import Any


def variant_group(nodeid: str, backends: list[str]) -> str | None:
    """``"int8-tflite"`` for ``test_x.py::test_y[int8-tflite-3]`` (the parameters up to the first backend name
    after the variant); ``None`` when the id names no tfopt variant and backend."""
    start = nodeid.find("[")
    if start < 0 or not nodeid.endswith("]"):
        return None
    parts = nodeid[start + 1:-1].split("-")
    for i, part in enumerate(parts[1:], start=1):
        if part in backends:
            return "-".join(parts[: i + 1])
    return None


def make_scheduler(config: Any, log: Any, backends: list[str]) -> Any:
    """A :class:`xdist.scheduler.LoadScopeScheduling` whose scopes are tfopt variant groups."""
    from xdist.scheduler import LoadScopeScheduling  # lazy: xdist is optional

    class VariantGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):
                return nodeid.split("@")[-1]
            return variant_group(nodeid, backends) or nodeid

    return VariantGroupScheduling(config, log)

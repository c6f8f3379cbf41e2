"""Explanations of failures: what a number is made of, for the message that reports it.

:mod:`.size`: where an artifact's bytes go (:func:`explain_size`), appended to broken ``max_size_kb`` and
``min_compression_ratio`` verdicts; :mod:`.formats`: one reader per artifact format; :mod:`.profile`: per-op
profiles (one module per runtime) for broken timing verdicts; :mod:`.memory`: what a peak memory is made of.
"""

from __future__ import annotations

from .formats import Account, SizePart
from .memory import MemoryBreakdown, MemoryPart, explain_memory
from .profile import OpTime, Profile, compare, diagnose, profile_artifact
from .size import LayerBytes, SizeReport, explain_size

__all__ = ["Account", "LayerBytes", "MemoryBreakdown", "MemoryPart", "OpTime", "Profile", "SizePart", "SizeReport", "compare", "diagnose",
           "explain_memory", "explain_size", "profile_artifact"]

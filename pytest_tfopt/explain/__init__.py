"""Explanations of failures: what a number is made of, for the message that reports it.

:mod:`.size`: where an artifact's bytes go (:func:`explain_size`), appended to broken ``max_size_kb`` and
``min_compression_ratio`` verdicts; :mod:`.formats`: one reader per artifact format.
"""

from __future__ import annotations

from .formats import Account, SizePart
from .size import LayerBytes, SizeReport, explain_size

__all__ = ["Account", "LayerBytes", "SizePart", "SizeReport", "explain_size"]

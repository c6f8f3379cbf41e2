"""Accuracy-aware INT8: ``int8(max_drop=0.01)`` keeps the layers quantization hurts most in float.

This module registers the ``int8`` precision in place of the plain one from ``ptq.py``. Without
``max_drop`` it *is* the plain recipe (same artifact bytes and metadata). With ``max_drop`` it:

0. builds plain ``int8`` and measures its top-1 drop against fp32 (both ``.tflite`` on LiteRT) on
   the calibration samples (labelled: they come from the training split, never the evaluation
   split); if the drop is within ``max_drop`` that artifact is the result;
1. otherwise ranks the quantized layers with TensorFlow's ``QuantizationDebugger``
   (RMSE/scale, see ``triage.py``) and keeps the worst 1, 2, ... of them float
   (``QuantizationDebugOptions(denylisted_nodes=...)`` + ``get_nondebug_quantized_model()``), one
   more each round, until the drop is within budget;
2. when every scored layer is float and the budget still breaks (or the debugger cannot quantize
   anything with that many layers denylisted), falls back to dynamic-range quantization, which keeps
   every activation, the input included, float.

The artifact is the first candidate within budget or, when none is, the one with the smallest drop
(``met: false``). Its metadata (``selective``) names the float layers with their RMSE/scale, the
drop reached, and every round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import tfenv
from ..artifact import Artifact
from ..backends.tflite import TFLiteRunner
from ..dataset import Dataset
from ..errors import ConversionError, UsageError, first_line
from ..measure.accuracy import top1
from ..models import SourceModel
from . import Recipe, VariantRegistry
from .debugger import DEBUG_SAMPLES, debug_inputs, open_debugger, quiet, rank_layers
from .ptq import DESCRIPTIONS, _build, validate_calibration_size


def register(registry: VariantRegistry) -> None:
    """Register ``int8`` with the ``max_drop`` parameter (replaces the plain ``int8``)."""
    registry.register(
        Recipe(
            "int8",
            build,
            DESCRIPTIONS["int8"] + "; int8(max_drop=0.01) keeps the worst layers float until the "
            "top-1 drop on the calibration samples is within 0.01",
            {"calibration_size": None, "max_drop": None, "per_channel": True},
            needs_calibration=True,
            validate=validate,
        )
    )


def validate(params: dict[str, Any]) -> None:
    """``max_drop`` is ``None`` or a finite number >= 0 (a top-1 drop, e.g. 0.01 = one point)."""
    validate_calibration_size(params)
    value = params.get("max_drop")
    if value is None:
        return
    if params.get("per_channel") is False:
        raise UsageError(
            "int8(max_drop=..., per_channel=False) is not supported: the layer search ranks per-channel int8 "
            "layers; use one of the two parameters"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UsageError(
            f"int8(max_drop={value!r}): max_drop must be a number >= 0, the top-1 drop allowed against fp32 "
            "(e.g. int8(max_drop=0.01) for one point)"
        )


def build(source: SourceModel, calibration: Dataset | None, params: dict[str, Any]) -> Artifact:
    """Plain ``int8`` without ``max_drop``; the accuracy-aware search with it."""
    sig = source.signature
    if params.get("max_drop") is not None and (len(sig.inputs) > 1 or len(sig.outputs) > 1):
        # refused before converting anything: the layer search judges top-1 of one class output
        raise ConversionError(
            f"int8(max_drop=...) on {source.name} ({len(sig.inputs)} inputs, {len(sig.outputs)} outputs) is not "
            "supported yet: its layer search ranks layers by the top-1 drop of one class output fed one input; use "
            "plain int8 with per-output budgets (max_accuracy_drop(..., output=...)) and the triage of a failure"
        )
    plain = _build("int8")(source, calibration, params)
    if params.get("max_drop") is None:
        return plain
    return _search(source, calibration, float(params["max_drop"]), plain)


class _Judge:
    """Top-1 drop of a candidate against fp32 on the calibration samples (``.tflite`` on LiteRT)."""

    def __init__(self, source: SourceModel, data: Dataset) -> None:
        self.data = data
        self._top1 = top1
        with tfenv.native_output(replay=True):  # the converter's C++ log reaches the terminal only on failure
            content = source.converter().convert()
        reference = _predict(content, data.x)
        if data.y is not None:
            self.metric = "top1"
            self.labels = data.y
        else:  # unlabelled calibration data: agreement with fp32's top-1 instead
            self.metric = "top1 agreement with fp32"
            self.labels = _classes(reference)
        self.reference = self._top1(self.labels, reference)

    def drop(self, content: bytes) -> tuple[float, float]:
        value = self._top1(self.labels, _predict(content, self.data.x))
        return self.reference - value, value


@dataclass(frozen=True)
class _Candidate:
    round: int
    drop: float
    content: bytes = field(repr=False)
    settings: dict[str, str]
    floats: tuple[Any, ...] = ()
    fallback: str | None = None


def _search(source: SourceModel, calibration: Dataset, max_drop: float, plain: Artifact) -> Artifact:
    return _Search(source, calibration, max_drop, plain).run()


class _Search:
    """One accuracy-aware search: plain int8, then denylisting rounds, then the dynamic-range fallback.

    Every stage records its candidate (``record``); ``rounds`` is what the metadata tells of them.
    """

    def __init__(self, source: SourceModel, calibration: Dataset, max_drop: float, plain: Artifact) -> None:
        self.tf = tfenv.tensorflow()
        self.source = source
        self.calibration = calibration
        self.max_drop = max_drop
        self.plain = plain
        self.judge = _Judge(source, calibration)
        self.rounds: list[dict[str, Any]] = []
        self.candidates: list[_Candidate] = []
        self.base_settings = dict(plain.metadata.get("settings", {}))
        self.ranking: list[Any] = []  # the debugger's first ranking, when the denylisting rounds ended normally

    def run(self) -> Artifact:
        met = self.record(self.plain.content, self.base_settings)
        reason = None
        if not met:
            met, reason = self.denylist()
        if not met:
            self.fall_back(reason)
        return self.artifact(_best(self.candidates, self.max_drop))

    def record(
        self, content: bytes, settings: dict[str, str], floats: tuple[Any, ...] = (), fallback: str | None = None
    ) -> bool:
        """Judge ``content`` as the next round; returns whether its drop is within budget."""
        drop, value = self.judge.drop(content)
        n = len(self.rounds)
        self.rounds.append(
            {
                "round": n,
                "float_layers": [f"{r.label} ({r.op})" for r in floats],
                "drop": drop,
                "top1": value,
                "size_bytes": len(content),
                **({"fallback": fallback} if fallback else {}),
            }
        )
        self.candidates.append(_Candidate(n, drop, content, settings, floats, fallback))
        return drop <= self.max_drop

    def denylist(self) -> tuple[bool, str | None]:
        """The denylisting rounds; returns (met, why they stopped short)."""
        try:
            with quiet():
                debugger = open_debugger(
                    self.source, self.calibration, debug_inputs(self.source, self.calibration, DEBUG_SAMPLES)
                )
                met, reason, self.ranking = self._denylist_rounds(debugger)
                return met, reason
        except Exception as exc:  # the debugger failed: plain int8 and dynamic range remain
            return False, f"QuantizationDebugger unavailable ({type(exc).__name__}: {first_line(exc, 160, empty='')})"

    def _denylist_rounds(self, debugger: Any) -> tuple[bool, str | None, list[Any]]:
        """Float one more layer per round: the worst of the current ranking, re-ranked after each round
        (a broken layer hides the error of the layers after it). Returns (met, why it stopped, first ranking)."""
        first: list[Any] = []
        floats: list[Any] = []
        while True:
            ranking = rank_layers(debugger, self.source)
            first = first or ranking
            chosen = {r.tensor for r in floats}
            remaining = [
                r for r in ranking if r.tensor not in chosen and math.isfinite(r.rmse_scale) and r.rmse_scale > 0
            ]
            if not remaining:
                return False, f"{len(floats)} layers float, no quantized layer left with a measurable error", first
            floats.append(remaining[0])
            nodes = [r.tensor for r in floats]
            try:
                debugger.options = self.tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes)
            except ValueError as exc:
                # every quantized op denylisted: "Please check if the quantized model is in debug mode"
                why = f"with {len(nodes)} layers float nothing is left to quantize ({first_line(exc, 160, empty='')})"
                return False, why, first
            settings = {**self.base_settings, "denylisted_nodes": repr(nodes)}
            if self.record(debugger.get_nondebug_quantized_model(), settings, tuple(floats)):
                return True, None, first
            debugger.run()

    def fall_back(self, reason: str | None) -> None:
        """The last round: dynamic-range quantization, which keeps every activation float."""
        dynamic = _build("dynamic")(self.source, None, {})
        self.record(
            dynamic.content,
            dict(dynamic.metadata.get("settings", {})),
            fallback=f"dynamic-range quantization: {reason}",
        )

    def artifact(self, best: _Candidate) -> Artifact:
        """``best`` as the ``int8`` artifact, its ``selective`` metadata telling every round."""
        selective = {
            "max_drop": self.max_drop,
            "met": bool(best.drop <= self.max_drop),
            "drop": best.drop,
            "metric": self.judge.metric,
            "reference_top1": self.judge.reference,
            "top1": self.rounds[best.round]["top1"],
            "validation": f"calibration samples ({len(self.calibration)}, training split)",
            "chosen_round": best.round,
            "float_layers": [
                {
                    "layer": r.layer,
                    "op": r.op,
                    "tensor": r.tensor,
                    "rmse_scale": r.rmse_scale,
                    "why": f"float from round {i + 1}: worst RMSE/scale ({r.rmse_scale:.2f}) of the layers still quantized",
                }
                for i, r in enumerate(best.floats)
            ],
            "fallback": best.fallback,
            "rounds": self.rounds,
            "ranking": [r.to_dict() for r in self.ranking[:10]],
        }
        return Artifact(
            best.content,
            {"variant": "int8", "converter": _converter_text(best), "settings": best.settings, "selective": selective},
        )


def _best(candidates: list[_Candidate], max_drop: float) -> _Candidate:
    """The first candidate within budget, else the smallest drop (earliest round on ties)."""
    within = [c for c in candidates if c.drop <= max_drop]
    return within[0] if within else min(candidates, key=lambda c: (c.drop, c.round))


def _converter_text(best: _Candidate) -> str:
    if best.fallback:
        return "tf.lite.TFLiteConverter (dynamic-range fallback)"
    if best.floats:
        return "tf.lite.TFLiteConverter + QuantizationDebugger (selective: denylisted_nodes)"
    return "tf.lite.TFLiteConverter"


def _predict(content: bytes, x: np.ndarray) -> np.ndarray:
    return TFLiteRunner(content, threads=tfenv.default_threads()).predict(np.asarray(x))


def _classes(pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim == 1 or pred.shape[-1] == 1:
        return (pred.reshape(len(pred)) > 0.5).astype(np.int64)
    return pred.argmax(axis=-1)

"""Quantization triage: which layers does full-integer quantization hurt most?

:func:`quantization_triage` runs TensorFlow's ``tf.lite.experimental.QuantizationDebugger`` on the
``int8`` recipe (same converter settings, same calibration) and ranks its per-layer rows by
RMSE/scale: the root-mean-square error of a layer's int8 output against the float op fed the same
(dequantized) input, in units of the output's quantization step. Plain rounding noise is about
1/sqrt(12) ~ 0.29; TensorFlow's guide treats layers above ~0.7 as suspects.

The debugger itself (run like ``int8``, rows mapped back to Keras layers) lives in
:mod:`pytest_tfopt.variants.debugger`, which also drives the accuracy-aware ``int8(max_drop=...)`` recipe;
here it only decorates failure messages. It checks each layer given that layer's quantized input, so
damage done by quantizing the model *input* does not show in its rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .dataset import Dataset
from .errors import first_line
from .models import SourceModel
from .variants.debugger import DEBUG_SAMPLES, LayerScore, debug_inputs, open_debugger, quiet, rank_layers

if TYPE_CHECKING:
    from .runnable import RunnableModel
    from .workbench import Workbench

SUSPECT_RMSE_SCALE = 0.7  # TensorFlow's QuantizationDebugger guide: layers above this are suspects
INPUT_NOTE = (
    "note: damage from quantizing the model input is not visible to the debugger "
    "(it checks each layer given its quantized input)"
)


@dataclass(frozen=True)
class Triage:
    """The worst layers (``layers``, RMSE/scale descending) and what to keep float.

    ``denylisted_nodes``: tensor names for ``QuantizationDebugOptions(denylisted_nodes=...)``;
    ``ranking``: every scored row; ``error``: why triage was unavailable (then the rest is empty).
    """

    layers: tuple[LayerScore, ...] = ()
    denylisted_nodes: tuple[str, ...] = ()
    ranking: tuple[LayerScore, ...] = ()
    samples: int = 0
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        """A few lines for a failure message (one line when triage was unavailable)."""
        if self.error is not None:
            return f"quantization triage unavailable: {self.error}"
        head = (
            f"quantization triage (QuantizationDebugger, RMSE/scale on {self.samples} samples; "
            f"~0.29 is plain rounding noise, > {SUSPECT_RMSE_SCALE:g} is suspect):"
        )
        lines = [head]
        for i, row in enumerate(self.layers, 1):
            lines.append(f"  {i}. {row.label} ({row.op}, tensor {_short(row.tensor)}) {row.rmse_scale:.2f}")
        if not self.layers:
            lines.append("  (no quantized layer to score)")
        nodes = ", ".join(repr(n) for n in self.denylisted_nodes)
        lines.append(
            f"  suggestion: denylisted_nodes=[{nodes}] (tf.lite.experimental.QuantizationDebugOptions) keeps "
            "them float; or use the variant int8(max_drop=<budget>), which does this until the drop fits"
        )
        lines.append(f"  {INPUT_NOTE}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "error": self.error,
            "samples": self.samples,
            "layers": [r.to_dict() for r in self.layers],
            "denylisted_nodes": list(self.denylisted_nodes),
        }


def quantization_triage(
    source: SourceModel,
    calibration: Dataset,
    evaluation: Dataset | None = None,
    top: int = 5,
    samples: int = DEBUG_SAMPLES,
) -> Triage:
    """Rank the layers full-integer quantization hurts most; never raises for debugger trouble.

    The converter is set up like the ``int8`` variant with ``calibration``; the debugger runs on up
    to ``samples`` inputs of ``evaluation`` (or of ``calibration`` when not given). Returns the
    ``top`` worst layers; on any failure a :class:`Triage` whose ``error`` says why.
    """
    try:
        data = evaluation if evaluation is not None and len(evaluation) else calibration
        debug_x = debug_inputs(source, data, samples)
        with quiet():
            debugger = open_debugger(source, calibration, debug_x)
            ranking = rank_layers(debugger, source)
    except Exception as exc:  # triage decorates a failure message; it must never cause one
        return Triage(error=_reason(exc))
    worst = tuple(r for r in ranking if math.isfinite(r.rmse_scale))[: max(0, top)]
    return Triage(worst, tuple(suggest_denylist(ranking, top)), tuple(ranking), len(next(iter(debug_x.values()))))


def suggest_denylist(ranking: list[LayerScore], limit: int = 5) -> list[str]:
    """Tensor names worth keeping float: the rows above the suspect line, else the single worst row."""
    scored = [r for r in ranking if math.isfinite(r.rmse_scale) and r.rmse_scale > 0]
    suspects = [r.tensor for r in scored if r.rmse_scale > SUSPECT_RMSE_SCALE][: max(1, limit)]
    return suspects or [r.tensor for r in scored[:1]]


TRIAGED_BUDGETS = ("max_accuracy_drop", "min_accuracy_drop", "min_fidelity")
TRIAGED_PRECISIONS = ("int8", "int8_io")


def failure_note(bench: Workbench, model: RunnableModel, verdicts: Iterable[Any]) -> str | None:
    """Lines to append to a test failure when a full-integer TFLite variant broke an accuracy budget.

    ``None`` unless some verdict of ``max_accuracy_drop``/``min_accuracy_drop``/``min_fidelity`` failed
    (``passed is False``) for a plain ``int8``/``int8_io`` variant (no transforms: triage converts the
    source model) on the ``tflite`` backend. Otherwise: what ``int8(max_drop=...)`` recorded, the
    triage summary (memoized in ``model.measurements["quantization_triage"]``) and the kept artifact's
    path. Never raises.
    """
    try:
        if model.backend != "tflite" or not any(_triaged(v) for v in verdicts):
            return None
        plan = bench.variants.resolve(model.variant)
        spec, recipe = plan.precision
        if plan.transforms or spec.name not in TRIAGED_PRECISIONS:
            return None
        lines = []
        selective = model.artifact.metadata.get("selective")
        if isinstance(selective, dict):
            lines.append(selective_note(selective))
        triage = model.measurements.get("quantization_triage")
        if not isinstance(triage, Triage):
            params = {**recipe.params, **dict(spec.params)}
            triage = quantization_triage(
                bench.source, bench.calibration(params.get("calibration_size")), model.eval_dataset
            )
            model.measurements["quantization_triage"] = triage
        lines.append(triage.summary())
        lines.append(f"kept artifact: {model.path}")
        return "\n".join(lines)
    except Exception as exc:  # a failing test stays a failing test, with its own message
        return f"quantization triage unavailable: {_reason(exc)}"


def selective_note(selective: dict[str, Any]) -> str:
    """One line on what ``int8(max_drop=...)`` reached (from its artifact metadata)."""
    floats = ", ".join(str(f.get("layer") or f.get("tensor")) for f in selective.get("float_layers", [])) or "none"
    state = "met" if selective.get("met") else "NOT met"
    fallback = f", {selective['fallback']}" if selective.get("fallback") else ""
    return (
        f"int8(max_drop={selective.get('max_drop')}) {state} on the calibration samples: drop "
        f"{selective.get('drop', float('nan')):.4f} in round {selective.get('chosen_round')}, float layers: {floats}{fallback}"
    )


def _triaged(verdict: Any) -> bool:
    return getattr(verdict, "passed", None) is False and getattr(verdict, "budget", "") in TRIAGED_BUDGETS


# ---- helpers ----------------------------------------------------------------------------------


def _short(tensor: str, width: int = 60) -> str:
    first = tensor.split(";")[0]
    text = first + (";..." if ";" in tensor else "")
    return text if len(text) <= width else text[: width - 3] + "..."


def _reason(exc: BaseException) -> str:
    text = first_line(exc, empty="")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""Quantization triage: which layers does full-integer quantization hurt most?

:func:`quantization_triage` runs TensorFlow's ``tf.lite.experimental.QuantizationDebugger`` on the
``int8`` recipe (same converter settings, same calibration) and ranks its per-layer rows by
RMSE/scale: the root-mean-square error of a layer's int8 output against the float op fed the same
(dequantized) input, in units of the output's quantization step. Plain rounding noise is about
1/sqrt(12) ~ 0.29; TensorFlow's guide treats layers above ~0.7 as suspects.

Facts the code works around (TOOLCHAIN §9): the debugger builds its own ``tf.lite.Interpreter``
with XNNPACK, which refuses some int8 graphs, so its interpreter is rebuilt with the builtin kernels;
its rows name TFLite ops and tensors, so each row is mapped back to a Keras layer where the tensor
name allows; it checks each layer given that layer's quantized input, so damage done by quantizing
the model *input* does not show in its rows.

The same machinery (:func:`open_debugger`, :func:`rank_layers`) drives the accuracy-aware
``int8(max_drop=...)`` recipe in ``variants/selective.py``.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import tfenv
from .dataset import Dataset
from .models import SourceModel

if TYPE_CHECKING:
    from .runnable import RunnableModel
    from .workbench import Workbench

DEBUG_SAMPLES = 50
SUSPECT_RMSE_SCALE = 0.7  # TensorFlow's QuantizationDebugger guide: layers above this are suspects
INPUT_NOTE = (
    "note: damage from quantizing the model input is not visible to the debugger "
    "(it checks each layer given its quantized input)"
)


@dataclass(frozen=True)
class LayerScore:
    """One debugger row: a quantized TFLite op and how far its int8 output strays.

    ``layer``: the Keras layer name(s) the op belongs to (``None`` when the tensor name says
    nothing); ``layer_match``: ``"name"`` (found in the tensor name), ``"producer"`` (inherited
    from the op feeding it, e.g. a fused activation) or ``None``. ``tensor`` is the op's output
    tensor name, what ``QuantizationDebugOptions(denylisted_nodes=[...])`` takes. ``rmse_scale``
    is RMSE / scale (quantization steps); ``rmse`` and ``max_abs_error`` are in output units.
    """

    op: str
    tensor: str
    rmse_scale: float
    rmse: float
    scale: float
    max_abs_error: float
    layer: str | None = None
    layer_match: str | None = None

    @property
    def label(self) -> str:
        """The Keras layer name, or the tensor name when no layer is known."""
        return self.layer or self.tensor

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


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


# ---- the debugger ---------------------------------------------------------------------------


def debug_inputs(source: SourceModel, data: Dataset, samples: int = DEBUG_SAMPLES) -> dict[str, np.ndarray]:
    """Up to ``samples`` inputs of ``data``, evenly spread (deterministic), by input name in each input's dtype."""
    feed = source.signature.feed(data.x, "triage data", source.name, one_sample=False)
    n = len(data)
    index = np.unique(np.linspace(0, n - 1, min(n, max(1, samples))).round().astype(int))
    return {name: np.asarray(x[index]) for name, x in feed.items()}


def open_debugger(source: SourceModel, calibration: Dataset, debug_x: dict[str, np.ndarray]) -> Any:
    """A ``QuantizationDebugger`` for ``source`` configured like ``int8``, fed ``debug_x``, run once.

    The debugger feeds a list of arrays in its interpreter's input order; with several inputs that order is
    read from the converted model, so every input gets its own data.
    """
    from .variants.ptq import _configure

    tfenv.tensorflow()
    converter = source.converter()
    _configure("int8", converter, calibration, signature=source.signature)
    order = list(debug_x) if len(debug_x) == 1 else _input_order(source)
    n = len(next(iter(debug_x.values())))

    def dataset() -> Any:
        return ([debug_x[name][i : i + 1] for name in order] for i in range(n))

    debugger = _debugger_class()(converter=converter, debug_dataset=dataset)
    debugger.run()
    return debugger


def _input_order(source: SourceModel) -> list[str]:
    """Input names in the order a converted model lists its input tensors (the debugger's order)."""
    from .backends.tflite import _graph_name, _interpreter_cls

    Interpreter, resolver = _interpreter_cls()
    interp = Interpreter(model_content=source.converter().convert(),
                         experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    names = [_graph_name(d["name"]) for d in interp.get_input_details()]
    if sorted(names) != sorted(source.signature.input_names):
        raise ValueError(f"the converted model's inputs {names} are not {source.signature.input_names}")
    return names


def _debugger_class() -> type:
    from tensorflow.lite.python import interpreter as tflite
    from tensorflow.lite.tools.optimize.debugging.python.debugger import QuantizationDebugger

    class BuiltinKernelDebugger(QuantizationDebugger):
        """The debugger with its quantized interpreter on the builtin kernels (XNNPACK refuses some int8 graphs)."""

        def _init_from_converter(
            self, options: Any, converter: Any, calibrated_model: Any = None, float_model: Any = None
        ) -> None:
            super()._init_from_converter(options, converter, calibrated_model, float_model)
            self._quant_interpreter = tflite.Interpreter(
                model_content=self.quant_model,
                experimental_op_resolver_type=tflite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                experimental_preserve_all_tensors=options.layer_direct_compare_metrics is not None,
            )

    return BuiltinKernelDebugger


def rank_layers(debugger: Any, source: SourceModel) -> list[LayerScore]:
    """The debugger's rows as :class:`LayerScore`, worst RMSE/scale first (non-finite last)."""
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    names = _keras_layer_names(source.model) if source.kind in ("keras3", "tf_keras") else set()
    rows = []
    for row in csv.DictReader(buf):
        mse, scale = _float(row.get("mean_squared_error")), _float(row.get("scale"))
        rmse = math.sqrt(mse) if mse >= 0 else math.nan
        score = rmse / scale if scale > 0 else math.nan
        tensor = row.get("tensor_name") or ""
        layer, match = _layer_of(debugger, tensor, row.get("tensor_idx"), names)
        rows.append(
            LayerScore(
                row.get("op_name") or "?", tensor, score, rmse, scale, _float(row.get("max_abs_error")), layer, match
            )
        )
    # stable: equal scores keep graph order
    return sorted(rows, key=lambda r: -r.rmse_scale if math.isfinite(r.rmse_scale) else math.inf)


# ---- tensor name -> Keras layer ---------------------------------------------------------------


def _keras_layer_names(model: Any) -> set[str]:
    try:
        flatten = getattr(model, "_flatten_layers", None)
        layers = list(flatten(include_self=False)) if callable(flatten) else list(getattr(model, "layers", []))
        return {str(layer.name) for layer in layers}
    except Exception:  # best effort: no names, rows keep their TFLite names
        return set()


def _layers_in(tensor: str, names: set[str]) -> list[str]:
    """Keras layer names in a (possibly fused, ``;``-joined) TFLite tensor name, innermost per part."""
    found: list[str] = []
    for part in tensor.split(";"):
        hit = None
        for segment in part.split("/")[:-1]:  # the last segment is the TF op (Relu, MatMul, ...)
            if segment in names:
                hit = segment
            elif re.sub(r"_\d+$", "", segment) in names:  # Keras 3 scopes may add _1
                hit = re.sub(r"_\d+$", "", segment)
        if hit and hit not in found:
            found.append(hit)
    return found


def _layer_of(debugger: Any, tensor: str, tensor_idx: Any, names: set[str]) -> tuple[str | None, str | None]:
    if not names:
        return None, None
    found = _layers_in(tensor, names)
    if found:
        return "+".join(found), "name"
    try:  # e.g. the output SOFTMAX of a Dense(activation="softmax"): walk back to the op feeding it
        interp = debugger._quant_interpreter
        frontier, seen = [int(tensor_idx)], set()
        for _ in range(8):
            nxt = []
            for t in frontier:
                op = debugger._defining_op.get(t)
                if op is None:
                    continue
                for i in interp._get_op_details(op)["inputs"]:
                    if i < 0 or i in seen:
                        continue
                    seen.add(i)
                    found = _layers_in(interp._get_tensor_details(i, 0)["name"], names)
                    if found:
                        return "+".join(found), "producer"
                    nxt.append(i)
            frontier = nxt
    except Exception:  # internals moved: keep the TFLite names
        pass
    return None, None


# ---- helpers ----------------------------------------------------------------------------------


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the debugger's ``tf.lite.Interpreter`` deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _short(tensor: str, width: int = 60) -> str:
    first = tensor.split(";")[0]
    text = first + (";..." if ";" in tensor else "")
    return text if len(text) <= width else text[: width - 3] + "..."


def _reason(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__

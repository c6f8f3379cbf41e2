"""TensorFlow's ``QuantizationDebugger``, run like the ``int8`` recipe, and its rows as ranked layers.

The engine under both the accuracy-aware ``int8(max_drop=...)`` recipe (``variants/selective.py``) and
the quantization triage of failing accuracy budgets (``triage.py``).

Facts the code works around (TOOLCHAIN §9): the debugger builds its own ``tf.lite.Interpreter`` with
XNNPACK, which refuses some int8 graphs, so its interpreter is rebuilt with the builtin kernels; its rows
name TFLite ops and tensors, so each row is mapped back to a Keras layer where the tensor name allows.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import tfenv
from ..dataset import Dataset
from ..litert import graph_name, interpreter_class
from ..models import SourceModel
from .ptq import configure

#: inputs the debugger runs on (evenly spread over the data)
DEBUG_SAMPLES = 50


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

    tfenv.tensorflow()
    converter = source.converter()
    configure("int8", converter, calibration, signature=source.signature)
    order = list(debug_x) if len(debug_x) == 1 else _input_order(source)
    n = len(next(iter(debug_x.values())))

    def dataset() -> Any:
        return ([debug_x[name][i : i + 1] for name in order] for i in range(n))

    with tfenv.native_output(replay=True):  # the converter's C++ log reaches the terminal only on failure
        debugger = _debugger_class()(converter=converter, debug_dataset=dataset)
        debugger.run()
    return debugger


def _input_order(source: SourceModel) -> list[str]:
    """Input names in the order a converted model lists its input tensors (the debugger's order)."""

    Interpreter, resolver = interpreter_class()
    with tfenv.native_output(replay=True):
        content = source.converter().convert()
    interp = Interpreter(model_content=content,
                         experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    names = [graph_name(d["name"]) for d in interp.get_input_details()]
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

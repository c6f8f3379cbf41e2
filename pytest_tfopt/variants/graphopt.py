"""Graph optimization: freeze the inference graph and run Grappler on it.

``graphopt`` takes the current model (a Keras model or a SavedModel), traces its inference
function (``model(x, training=False)``, or the SavedModel's ``serving_default``), folds
the variables into constants and runs Grappler's graph rewrites (pruning, debug stripping,
function inlining, common-subgraph elimination, constant folding, shape and arithmetic
simplification, loop and dependency optimization). The result is exported as a TF1-style
SavedModel with a ``serving_default`` signature into a temporary directory that lives as
long as the returned :class:`~pytest_tfopt.models.SourceModel`; the precision stage then
converts it like any SavedModel, e.g. ``graphopt+int8``.

Grappler's *remapper* is left out on purpose: it fuses Conv2D/MatMul+BiasAdd+activation
into ``_FusedConv2D``/``_FusedMatMul``, TensorFlow-CPU kernels the TFLite converter
rejects (TFLite fuses those itself). Outputs are checked against the original model: a
maximum absolute difference above ``1e-4`` is a :class:`ConversionError`.
"""

from __future__ import annotations

import collections
import shutil
import tempfile
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import tfenv
from ..dataset import Dataset
from ..errors import ConversionError
from ..models import SourceModel, _from_keras, _load_saved_model
from . import Recipe, VariantRegistry
from .training import Log

TOLERANCE = 1e-4
PROBE_SAMPLES = 8
GRAPPLER_OPTIMIZERS = (
    "pruning", "debug_stripper", "function", "common_subgraph_elimination", "constfold", "shape",
    "arithmetic", "loop", "dependency",
)


def _inference_function(source: SourceModel) -> tuple[Any, str, str, Callable[[np.ndarray], np.ndarray]]:
    """The concrete inference function, its input and output keys, and a reference ``predict``."""
    tf = tfenv.tensorflow()
    if source.kind == "saved_model":
        sig = source.model.signatures["serving_default"]
        (in_key,) = sig.structured_input_signature[1].keys()
        (out_key,) = sig.structured_outputs.keys()
        return sig, in_key, out_key, lambda x: np.asarray(sig(**{in_key: tf.constant(x)})[out_key])
    if source.kind in ("keras3", "tf_keras"):
        model = source.model
        spec = [tf.TensorSpec((None, *source.input_shape), source.input_dtype, name="input")]
        fn = tf.function(lambda x: model(x, training=False), input_signature=spec).get_concrete_function()
        return fn, "input", "output_0", lambda x: np.asarray(tf.nest.flatten(fn(tf.constant(x)))[0])
    raise ConversionError(
        f"graphopt optimizes a TensorFlow graph but {source.name} is a {source.kind} model: "
        "give the Keras or SavedModel source"
    )


def _count(graph_def: Any) -> collections.Counter:
    """Op types of every node, the function library's included."""
    ops = collections.Counter(node.op for node in graph_def.node)
    for function in graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    return ops


def _grappler(graph_def: Any, graph: Any, inputs: list[Any], outputs: list[Any]) -> Any:
    """``graph_def`` rewritten by Grappler, keeping ``inputs`` and ``outputs``."""
    tf = tfenv.tensorflow()
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, rewriter_config_pb2
    from tensorflow.python.grappler import tf_optimizer

    meta_graph = tf.compat.v1.train.export_meta_graph(graph_def=graph_def, graph=graph)
    fetch = meta_graph_pb2.CollectionDef()
    for tensor in inputs + outputs:
        fetch.node_list.value.append(tensor.name)
    meta_graph.collection_def["train_op"].CopyFrom(fetch)  # what Grappler must keep
    config = config_pb2.ConfigProto()
    rewrites = config.graph_options.rewrite_options
    rewrites.optimizers.extend(GRAPPLER_OPTIMIZERS)
    rewrites.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.TWO
    rewrites.min_graph_nodes = -1  # optimize small graphs too
    return tf_optimizer.OptimizeGraph(config, meta_graph)


def _export(graph_def: Any, inputs: list[Any], outputs: list[Any], in_key: str, out_key: str, path: str) -> None:
    """Write ``graph_def`` as a SavedModel whose ``serving_default`` maps ``in_key`` to ``out_key``."""
    tf = tfenv.tensorflow()
    from tensorflow.core.protobuf import meta_graph_pb2

    def info(tensor: Any) -> Any:
        return meta_graph_pb2.TensorInfo(name=tensor.name, dtype=tensor.dtype.as_datatype_enum,
                                         tensor_shape=tensor.shape.as_proto())

    signature = meta_graph_pb2.SignatureDef(method_name=tf.saved_model.PREDICT_METHOD_NAME)
    signature.inputs[in_key].CopyFrom(info(inputs[0]))
    signature.outputs[out_key].CopyFrom(info(outputs[0]))
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING],
                                                 signature_def_map={"serving_default": signature})
            builder.save()


def _probe(source: SourceModel, train: Dataset | None) -> np.ndarray:
    """A few samples to compare outputs on: the training split when it fits, else seeded random data."""
    if train is not None and len(train) > 0:
        x = np.asarray(train.x[:PROBE_SAMPLES])
        fits = x.ndim == len(source.input_shape) + 1 and all(
            e is None or e == g for e, g in zip(source.input_shape, x.shape[1:], strict=False))
        if fits:
            return x.astype(source.input_dtype, copy=False)
    rng = np.random.default_rng(0)
    shape = (PROBE_SAMPLES, *(8 if d is None else d for d in source.input_shape))
    dtype = np.dtype(source.input_dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.random(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    return rng.integers(0, 10, shape).astype(dtype)


def _graphopt(model: Any, train: Dataset | None, params: dict[str, Any], log: Log) -> tuple[SourceModel, dict]:
    tf = tfenv.tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    source = model if isinstance(model, SourceModel) else _from_keras(model, getattr(model, "name", "model"), None)
    fn, in_key, out_key, reference = _inference_function(source)
    try:
        frozen = convert_variables_to_constants_v2(fn, lower_control_flow=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConversionError(f"graphopt could not freeze {source.name}'s variables into constants ({first})") from None
    inputs = [t for t in frozen.inputs if t.dtype != tf.resource]
    outputs = list(frozen.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConversionError(
            f"graphopt: the frozen graph of {source.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
            "this version supports one of each"
        )
    frozen_def = frozen.graph.as_graph_def()
    optimized = _grappler(frozen_def, frozen.graph, inputs, outputs)
    before, after = _count(frozen_def), _count(optimized)

    path = tempfile.mkdtemp(prefix="tfopt-graphopt-")
    try:
        _export(optimized, inputs, outputs, in_key, out_key, path)
        result = _load_saved_model(path)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    weakref.finalize(result, shutil.rmtree, path, True)  # the directory lives as long as the model
    result.name = f"{source.name}:graphopt"

    x = _probe(source, train)
    expected = reference(x)
    got = np.asarray(result.model.signatures["serving_default"](**{in_key: tf.constant(x)})[out_key])
    diff = float(np.nanmax(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) if got.size else 0.0
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=TOLERANCE, equal_nan=True):
        raise ConversionError(
            f"graphopt changed {source.name}'s outputs (max abs difference {diff:.3g} > {TOLERANCE:g} on "
            f"{len(x)} samples): use the variant without graphopt"
        )
    ops_before, ops_after = sum(before.values()), sum(after.values())
    log(f"graphopt: {ops_before} -> {ops_after} ops, max abs difference {diff:.3g}")
    return result, {
        "ops_before": ops_before,
        "ops_after": ops_after,
        "op_types_after": dict(sorted(after.items())),
        "max_abs_diff": diff,
    }


def register(registry: VariantRegistry) -> None:
    """Register the Grappler graph-optimization transform."""
    registry.register(Recipe(
        "graphopt",
        description="freeze variables into constants and run Grappler (constant folding, arithmetic "
                    "simplification, ...); exports a SavedModel",
        apply=_graphopt, needs_keras=False,
    ))

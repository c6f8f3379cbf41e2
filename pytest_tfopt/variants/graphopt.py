"""Graph optimization: freeze the inference graph and run Grappler on it.

``graphopt`` takes the current model (a Keras model or a SavedModel), traces its serving
function (:meth:`~pytest_tfopt.models.SourceModel.serving_function`: every input and output by
name, inference mode), folds the variables into constants and runs Grappler's graph rewrites
(pruning, debug stripping, function inlining, common-subgraph elimination, constant folding,
shape and arithmetic simplification, loop and dependency optimization). The result is exported
as a TF1-style SavedModel whose ``serving_default`` signature keeps the model's input and output
names, into a temporary directory that lives as long as the returned
:class:`~pytest_tfopt.models.SourceModel`; the precision stage then converts it like any
SavedModel, e.g. ``graphopt+int8``.

Grappler's *remapper* is left out on purpose: it fuses Conv2D/MatMul+BiasAdd+activation
into ``_FusedConv2D``/``_FusedMatMul``, TensorFlow-CPU kernels the TFLite converter
rejects (TFLite fuses those itself). Every output is checked against the original model on a
few samples of every input (see :func:`_probe`): a maximum absolute difference above ``1e-4`` is
a :class:`ConversionError` naming the output.
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
from ..errors import ConversionError, DatasetError
from ..models import SourceModel
from ..models.keras import from_keras
from ..models.saved_model import load_saved_model
from ..signature import n_samples, take
from . import Recipe, VariantRegistry
from .training import Log

TOLERANCE = 1e-4
PROBE_SAMPLES = 8
GRAPPLER_OPTIMIZERS = (
    "pruning", "debug_stripper", "function", "common_subgraph_elimination", "constfold", "shape",
    "arithmetic", "loop", "dependency",
)


def _inference_function(source: SourceModel) -> tuple[Any, list[str], list[str]]:
    """The concrete serving function and its input and output names, in the order of its flat tensors.

    ``tf.nest`` flattens the function's dict input and dict output by sorted key, and so do
    ``ConcreteFunction.inputs``/``outputs`` (resource captures follow the inputs); pairing names
    through the same flattening keeps every tensor with its name.
    """
    tf = tfenv.tensorflow()
    if source.kind not in ("saved_model", "keras3", "tf_keras"):
        raise ConversionError(
            f"graphopt optimizes a TensorFlow graph but {source.name} is a {source.kind} model: "
            "give the Keras or SavedModel source"
        )
    fn = source.serving_function().get_concrete_function()
    in_names = tf.nest.flatten({n: n for n in source.signature.input_names})
    out_names = tf.nest.flatten({n: n for n in source.signature.output_names})
    return fn, in_names, out_names


def _outputs(call: Callable[[dict[str, Any]], Any], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``call`` (taking a dict input name → tensor, returning a dict by output name) on ``feed``, as arrays."""
    tf = tfenv.tensorflow()
    out = call({k: tf.constant(v) for k, v in feed.items()})
    return {k: np.asarray(v) for k, v in out.items()}


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


def _export(graph_def: Any, inputs: dict[str, Any], outputs: dict[str, Any], path: str) -> None:
    """Write ``graph_def`` as a SavedModel whose ``serving_default`` maps the named ``inputs`` to the named ``outputs``."""
    tf = tfenv.tensorflow()
    from tensorflow.core.protobuf import meta_graph_pb2

    def info(tensor: Any) -> Any:
        return meta_graph_pb2.TensorInfo(name=tensor.name, dtype=tensor.dtype.as_datatype_enum,
                                         tensor_shape=tensor.shape.as_proto())

    signature = meta_graph_pb2.SignatureDef(method_name=tf.saved_model.PREDICT_METHOD_NAME)
    for name, tensor in inputs.items():
        signature.inputs[name].CopyFrom(info(tensor))
    for name, tensor in outputs.items():
        signature.outputs[name].CopyFrom(info(tensor))
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING],
                                                 signature_def_map={"serving_default": signature})
            builder.save()


def _probe(source: SourceModel, train: Dataset | None) -> dict[str, np.ndarray]:
    """A few samples of every input to compare outputs on: the training split when it fits, else seeded random data.

    Random data: floats in [0, 1), booleans, and integers in {0, 1} (valid ids for any embedding
    or lookup table); free axes are 8 long.
    """
    signature = source.signature
    if train is not None and len(train) > 0:
        try:
            return signature.feed(take(train.x, slice(0, PROBE_SAMPLES)), "probe data", source.name, one_sample=False)
        except DatasetError:
            pass  # e.g. data for another model: random samples still compare the graphs
    return signature.random_batch(PROBE_SAMPLES)


def _largest_difference(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> tuple[str, float, bool]:
    """(the output differing most, its max abs difference, whether every output is within :data:`TOLERANCE`)."""
    worst, worst_diff, close = next(iter(expected)), 0.0, True
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            return name, float("inf"), False
        diff = float(np.nanmax(np.abs(have.astype(np.float64) - want.astype(np.float64)))) if have.size else 0.0
        close = close and np.allclose(have, want, rtol=0, atol=TOLERANCE, equal_nan=True)
        if diff > worst_diff or np.isnan(diff):
            worst, worst_diff = name, diff
    return worst, worst_diff, close


def _graphopt(model: Any, train: Dataset | None, params: dict[str, Any], log: Log) -> tuple[SourceModel, dict]:
    tf = tfenv.tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    source = model if isinstance(model, SourceModel) else from_keras(model, getattr(model, "name", "model"), None)
    fn, in_names, out_names = _inference_function(source)
    try:
        frozen = convert_variables_to_constants_v2(fn, lower_control_flow=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConversionError(f"graphopt could not freeze {source.name}'s variables into constants ({first})") from None
    placeholders = [t for t in frozen.inputs if t.dtype != tf.resource]
    if len(placeholders) != len(in_names) or len(frozen.outputs) != len(out_names):
        raise ConversionError(
            f"graphopt: the frozen graph of {source.name} has {len(placeholders)} inputs and {len(frozen.outputs)} "
            f"outputs, its signature {len(in_names)} and {len(out_names)}: use the variant without graphopt"
        )
    inputs = dict(zip(in_names, placeholders, strict=True))
    outputs = dict(zip(out_names, frozen.outputs, strict=True))
    frozen_def = frozen.graph.as_graph_def()
    optimized = _grappler(frozen_def, frozen.graph, list(inputs.values()), list(outputs.values()))
    before, after = _count(frozen_def), _count(optimized)

    path = tempfile.mkdtemp(prefix="tfopt-graphopt-")
    try:
        _export(optimized, inputs, outputs, path)
        result = load_saved_model(path)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    weakref.finalize(result, shutil.rmtree, path, True)  # the directory lives as long as the model
    result.name = f"{source.name}:graphopt"

    feed = _probe(source, train)
    expected = _outputs(fn, feed)
    optimized_fn = result.model.signatures["serving_default"]
    got = _outputs(lambda tensors: optimized_fn(**tensors), feed)
    worst, diff, close = _largest_difference(expected, got)
    if not close:
        where = f" on output {worst!r}" if len(expected) > 1 else ""
        raise ConversionError(
            f"graphopt changed {source.name}'s outputs (max abs difference {diff:.3g} > {TOLERANCE:g}{where} on "
            f"{n_samples(feed)} samples): use the variant without graphopt"
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

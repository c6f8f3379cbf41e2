"""Knowledge distillation: train a small *student* to mimic the source model (the *teacher*).

``distilled(student='tiny_mlp', temperature=4.0, alpha=0.1, epochs=5)`` trains the student
named ``student`` on the labelled training split with

    loss = alpha · CE(labels, student) + (1 − alpha) · T² · KL(softmax(teacher/T) ‖ softmax(student/T))

(:func:`distillation_loss`, Hinton et al. 2015). The teacher is frozen: its logits are
computed once, in inference mode. A teacher that ends in softmax (outputs probabilities,
detected from its outputs) gives ``log(probabilities)`` as logits: that equals the true
logits up to a per-sample constant, which softmax ignores. The student should output
logits; one that ends in softmax works too. The result outputs what the teacher outputs:
a softmax is appended when the teacher gives probabilities and the student logits, so
accuracy and budgets compare like for like. Chain a precision as usual:
``distilled(student='tiny_mlp')+int8``.

Students are registered by name, as a builder ``f(input_shape, num_classes) -> tf_keras
model`` (``input_shape`` without the batch axis) or as a tf_keras model used as an
architecture template (cloned, with fresh seeded weights, for every build)::

    # anywhere, e.g. in a conftest.py (process-wide)
    from pytest_tfopt.variants.distill import register_student
    register_student("my_student", build_my_student)

    # or per registry, through the same hook as recipes
    def tfopt_register_variants(registry):
        registry.students.register("my_student", build_my_student)

The built-in student ``tiny_mlp`` is Flatten → Dense(32, relu) → Dense(num_classes).
The cache key holds a fingerprint of the student (its builder's source code, or the
template model's config), so changing what a student builds rebuilds the variant; a change
hidden in code the builder calls is not seen (run with ``--tfopt-rebuild`` then).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import progress, tfenv
from ..dataset import Dataset
from ..errors import ConversionError, DatasetError, UsageError, first_line
from . import Recipe, VariantRegistry
from .training import SEED, Log, deterministic, positive_float, positive_int, require_training_data

_TINY = 1e-30  # floor before log(): probabilities that underflowed to 0


# ---- students -------------------------------------------------------------------------
class StudentRegistry:
    """Student name → builder ``f(input_shape, num_classes)`` or template tf_keras model.

    A registry with a ``parent`` also sees the parent's students (its own win).
    """

    def __init__(self, parent: StudentRegistry | None = None) -> None:
        self._students: dict[str, Any] = {}
        self._parent = parent

    def register(self, name: str, builder: Callable[[tuple, int], Any] | Any) -> None:
        """Add (or replace) student ``name``: a builder callable or a tf_keras model."""
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"student name {name!r} must be a non-empty string")
        if not callable(builder) and not hasattr(builder, "get_config"):
            raise UsageError(
                f"student {name!r}: give a builder f(input_shape, num_classes) -> tf_keras model, or a tf_keras "
                f"model; got {type(builder).__name__}"
            )
        self._students[name] = builder

    def names(self) -> list[str]:
        return sorted({*self._students, *(self._parent.names() if self._parent else [])})

    def get(self, name: str) -> Any:
        if name in self._students:
            return self._students[name]
        if self._parent is not None and name in self._parent.names():
            return self._parent.get(name)
        raise UsageError(
            f"distilled(student={name!r}): unknown student; registered students are {', '.join(self.names()) or 'none'} "
            "(add one with registry.students.register(name, builder) in tfopt_register_variants, or register_student)"
        )

    def fingerprint(self, name: str) -> str:
        """What the student is (its builder's source or template config), so a changed student rebuilds."""
        import hashlib
        import inspect

        entry = self.get(name)
        if hasattr(entry, "to_json"):
            text = entry.to_json()
        else:
            try:
                text = inspect.getsource(entry)
            except (OSError, TypeError):
                text = f"{getattr(entry, '__module__', '')}.{getattr(entry, '__qualname__', repr(entry))}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def build(self, name: str, input_shape: tuple, num_classes: int) -> Any:
        """A fresh, untrained tf_keras student (call after seeding for reproducible weights)."""
        import tf_keras

        entry = self.get(name)
        if isinstance(entry, tf_keras.Model):
            model = tf_keras.models.clone_model(entry)  # new variables, freshly initialized
        else:
            model = entry(tuple(input_shape), int(num_classes))
        if not isinstance(model, tf_keras.Model):
            kind = f"{type(model).__module__}.{type(model).__name__}"
            raise UsageError(
                f"student {name!r} built a {kind}, not a tf_keras model: build students with tf_keras (Keras 2)"
            )
        return model


def _tiny_mlp(input_shape: tuple, num_classes: int) -> Any:
    import tf_keras

    return tf_keras.Sequential([
        tf_keras.layers.Input(input_shape, name="image"),
        tf_keras.layers.Flatten(name="flatten"),
        tf_keras.layers.Dense(32, activation="relu", name="hidden"),
        tf_keras.layers.Dense(num_classes, name="logits"),
    ], name="tiny_mlp")


STUDENTS = StudentRegistry()
"""The process-wide students; every recipe registry's ``students`` falls back to these."""
STUDENTS.register("tiny_mlp", _tiny_mlp)


def register_student(name: str, builder: Callable[[tuple, int], Any] | Any) -> None:
    """Register a student process-wide (see :class:`StudentRegistry`)."""
    STUDENTS.register(name, builder)


# ---- the loss ---------------------------------------------------------------------------
def distillation_loss(y_true: Any, teacher_logits: Any, student_logits: Any, temperature: float,
                      alpha: float) -> Any:
    """Batch mean of ``alpha·CE(y, s) + (1−alpha)·T²·KL(softmax(t/T) ‖ softmax(s/T))``.

    ``y_true``: class indices ``(N,)`` or one-hot ``(N, C)``; the logits are ``(N, C)``.
    Returns a scalar tensor.
    """
    tf = tfenv.tensorflow()
    s = tf.convert_to_tensor(student_logits, tf.float32)
    t = tf.convert_to_tensor(teacher_logits, tf.float32)
    y = tf.convert_to_tensor(y_true)
    if y.shape.rank == s.shape.rank:
        ce = tf.nn.softmax_cross_entropy_with_logits(tf.cast(y, tf.float32), s)
    else:
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), s)
    log_pt = tf.nn.log_softmax(t / temperature, axis=-1)
    log_ps = tf.nn.log_softmax(s / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_pt) * (log_pt - log_ps), axis=-1)
    return tf.reduce_mean(alpha * ce + (1.0 - alpha) * temperature**2 * kl)


# ---- the transform ----------------------------------------------------------------------
def _is_probabilities(out: np.ndarray) -> bool:
    return bool(np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))


def _as_logits(out: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(out.astype(np.float64), _TINY)).astype(np.float32)


def _labels(train: Dataset, num_classes: int) -> np.ndarray:
    y = np.asarray(train.y)
    if y.ndim == 2 and y.shape[1] == num_classes:
        return y.astype(np.float32)
    y = y.reshape(len(y), -1)[:, 0] if y.ndim > 1 and y.size == len(y) else y
    if y.ndim != 1 or not np.all(np.equal(np.mod(y, 1), 0)):
        raise DatasetError(
            f"distilled needs class labels (indices or one-hot over {num_classes} classes); got labels of shape {np.shape(train.y)}"
        )
    if y.min() < 0 or y.max() >= num_classes:
        raise DatasetError(f"labels range over [{y.min()}, {y.max()}] but the teacher has {num_classes} classes: fix the labels")
    return y.astype(np.int32)


def _with_output(student: Any, input_shape: tuple, layer: Any | None, name: str) -> Any:
    """``student`` with ``layer`` appended (flat when the student has inputs)."""
    import tf_keras

    try:
        inputs = list(student.inputs or [])
    except (AttributeError, ValueError):
        inputs = []
    if layer is None and inputs:
        return student
    if inputs:
        return tf_keras.Model(inputs, layer(student.outputs[0]), name=name)
    inp = tf_keras.Input(input_shape)
    out = student(inp)
    return tf_keras.Model(inp, layer(out) if layer is not None else out, name=name)


@dataclass(frozen=True)
class _Targets:
    """What the frozen teacher gives the student to learn from, for every training sample."""

    probabilities: bool  # the teacher ends in softmax: ``logits`` are log(probabilities)
    logits: np.ndarray = field(repr=False)  # (N, classes) float32
    labels: np.ndarray = field(repr=False)  # class indices (N,) or one-hot (N, classes)

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])


def _refuse_unsupported(teacher: Any, train: Dataset) -> None:
    require_training_data(train, "distilled")
    if len(teacher.inputs) != 1 or len(teacher.outputs) != 1:
        # refused before any training: the students are one-input classifiers matched to one class output
        raise ConversionError(
            f"distilled cannot be defined for {teacher.name}: it has {len(teacher.inputs)} inputs and "
            f"{len(teacher.outputs)} outputs, and distillation here trains a one-input student on one class output "
            "(soft targets); test the post-training precisions, pruned/clustered/qat, or distill one head as its own model"
        )


def _teacher_targets(teacher: Any, x: np.ndarray, train: Dataset) -> _Targets:
    """The frozen teacher's logits on ``x`` (inference mode) and the labels, checked against its classes."""
    teacher.trainable = False
    teacher_out = np.asarray(teacher.predict(x, batch_size=256, verbose=0))
    if teacher_out.ndim != 2 or teacher_out.shape[1] < 2:
        raise ConversionError(
            f"distilled needs a classifier teacher with outputs (batch, classes); {teacher.name} outputs "
            f"{tuple(teacher_out.shape[1:])} per sample"
        )
    probabilities = _is_probabilities(teacher_out)
    logits = _as_logits(teacher_out) if probabilities else teacher_out.astype(np.float32)
    return _Targets(probabilities, logits, _labels(train, teacher_out.shape[1]))


def _new_student(students: StudentRegistry, name: str, x: np.ndarray, teacher: Any,
                 targets: _Targets) -> tuple[Any, bool]:
    """A fresh student for ``x``'s input shape, probed on a few samples; returns it and whether it ends in softmax."""
    input_shape = tuple(x.shape[1:])
    student = students.build(name, input_shape, targets.num_classes)
    try:
        probe = np.asarray(student(x[:8], training=False))
    except Exception as exc:  # the builder ignored input_shape, or a layer rejects it
        raise ConversionError(
            f"student {name!r} cannot take the teacher's input {input_shape}: {first_line(exc)}") from None
    if probe.shape[1:] != targets.logits.shape[1:]:
        raise ConversionError(
            f"student {name!r} outputs shape {(None, *probe.shape[1:])} but the teacher {teacher.name} outputs "
            f"{(None, *targets.logits.shape[1:])}: build the student with num_classes={targets.num_classes} outputs"
        )
    return student, _is_probabilities(probe)


def _train_step(student: Any, student_probs: bool, learning_rate: float, temperature: float,
                alpha: float) -> Callable[[Any, Any, Any], Any]:
    """One optimizer step on a batch ``(x, labels, teacher logits)``; returns (loss, agreements with the teacher)."""
    tf = tfenv.tensorflow()
    import tf_keras

    optimizer = tf_keras.optimizers.Adam(learning_rate)
    variables = student.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(xb: Any, yb: Any, tb: Any) -> Any:
        with tf.GradientTape() as tape:
            out = student(xb, training=True)
            logits = tf.math.log(tf.maximum(out, _TINY)) if student_probs else out
            loss = distillation_loss(yb, tb, logits, temperature, alpha)
            total = loss + tf.add_n(student.losses) if student.losses else loss
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables, strict=True))
        hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(tb, -1)), tf.float32))
        return loss, hits

    return step


def _train(step: Callable[[Any, Any, Any], Any], x: np.ndarray, targets: _Targets, params: dict[str, Any],
           log: Log) -> float:
    """Seeded shuffled epochs of ``step``; returns the last epoch's mean loss."""
    rng = np.random.default_rng(SEED)
    batch, epochs, n = params["batch_size"], params["epochs"], len(x)
    epoch_loss = math.nan
    for epoch in range(epochs):
        order = rng.permutation(n)
        total_loss, agree = 0.0, 0.0
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            loss, hits = step(x[idx], targets.labels[idx], targets.logits[idx])
            total_loss += float(loss) * len(idx)
            agree += float(hits)
        epoch_loss = total_loss / n
        progress.emitter(log).step("distilled", epoch + 1, epochs,
                                   info=f"loss={epoch_loss:.4f}, agreement with teacher={agree / n:.4f}")
    return epoch_loss


def _teacher_like(student: Any, input_shape: tuple, name: str, teacher_probs: bool, student_probs: bool) -> Any:
    """The trained student outputting what the teacher outputs (probabilities or logits)."""
    tf = tfenv.tensorflow()
    import tf_keras

    if teacher_probs and not student_probs:
        return _with_output(student, input_shape, tf_keras.layers.Softmax(name="distilled_probs"), f"{name}_distilled")
    if student_probs and not teacher_probs:
        to_logits = tf_keras.layers.Lambda(lambda p: tf.math.log(tf.maximum(p, _TINY)), name="distilled_logits")
        return _with_output(student, input_shape, to_logits, f"{name}_distilled")
    return _with_output(student, input_shape, None, f"{name}_distilled")


def _distill(teacher: Any, train: Dataset, params: dict[str, Any], log: Log,
             students: StudentRegistry) -> tuple[Any, dict[str, Any]]:
    _refuse_unsupported(teacher, train)
    tfenv.tensorflow()
    name, temperature, alpha = params["student"], float(params["temperature"]), float(params["alpha"])
    x = np.asarray(train.x, dtype=np.float32)
    with deterministic():
        targets = _teacher_targets(teacher, x, train)
        student, student_probs = _new_student(students, name, x, teacher, targets)
        log(f"distilled: teacher {teacher.name} ({teacher.count_params()} params, "
            f"{'probabilities' if targets.probabilities else 'logits'}) → student {name} ({student.count_params()} params), "
            f"T={temperature:g}, alpha={alpha:g}")
        step = _train_step(student, student_probs, params["learning_rate"], temperature, alpha)
        epoch_loss = _train(step, x, targets, params, log)
        if not math.isfinite(epoch_loss):
            raise ConversionError(f"distilling into {name!r} diverged (loss {epoch_loss}): lower learning_rate")

    final = _teacher_like(student, tuple(x.shape[1:]), name, targets.probabilities, student_probs)
    stats = {
        "student": name,
        "teacher_params": int(teacher.count_params()),
        "student_params": int(final.count_params()),
        "final_loss": round(float(epoch_loss), 6),
        "temperature": temperature,
        "alpha": alpha,
        "teacher_outputs": "probabilities" if targets.probabilities else "logits",
    }
    return final, stats


# ---- parameters and registration ----------------------------------------------------------
def _validator(students: StudentRegistry) -> Callable[[dict[str, Any]], None]:
    def validate(params: dict[str, Any]) -> None:
        t, a = params["temperature"], params["alpha"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0 or math.isinf(t):
            raise UsageError(f"distilled(temperature={t!r}): temperature must be a number > 0, e.g. 4.0")
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise UsageError(f"distilled(alpha={a!r}): alpha (weight of the hard-label loss) must be in [0, 1], e.g. 0.1")
        try:
            positive_int(params, "epochs")
            positive_int(params, "batch_size")
            positive_float(params, "learning_rate")
        except UsageError as exc:
            raise UsageError(f"distilled: {exc}") from None
        if not isinstance(params["student"], str):
            raise UsageError(f"distilled(student={params['student']!r}): name a registered student, e.g. student='tiny_mlp'")
        students.get(params["student"])

    return validate


def register(registry: VariantRegistry) -> None:
    """Register ``distilled`` and give ``registry`` a ``students`` registry (falls back to :data:`STUDENTS`)."""
    students = getattr(registry, "students", None)
    if not isinstance(students, StudentRegistry):
        students = StudentRegistry(parent=STUDENTS)
        registry.students = students  # type: ignore[attr-defined]

    def apply(model: Any, train: Dataset, params: dict[str, Any], log: Log) -> tuple[Any, dict[str, Any]]:
        return _distill(model, train, params, log, students)

    registry.register(Recipe(
        "distilled",
        description="knowledge distillation from the source model into a registered student (default tiny_mlp)",
        params={"student": "tiny_mlp", "temperature": 4.0, "alpha": 0.1, "epochs": 5, "batch_size": 32,
                "learning_rate": 1e-2},  # the student trains from scratch: 1e-3 reaches 0.84 in 5 epochs, 1e-2 0.96
        apply=apply, validate=_validator(students), fingerprint=lambda params: students.fingerprint(params["student"]),
    ))

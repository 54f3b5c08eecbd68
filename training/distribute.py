"""Training on several devices with `tf.distribute`, optimising the single-device objective.

Pair losses compare every example of the batch with every other, so a replica
that scored only its own slice would optimise a smaller-batch loss with fewer
negatives. Instead the sampler still draws one global P x K batch, each
replica embeds its share, the replicas all-gather embeddings and labels, and
each computes the loss of the whole batch. `all_gather`'s gradient sums the
replicas' upstream gradients before handing each its own rows, so a replica
differentiates loss / replicas, and the optimizer's sum of replica gradients
is exactly the gradient of the global loss. BatchNorm statistics are
synchronised for the same reason: per-replica statistics would change the
embeddings themselves.

With one replica every function here returns its input unchanged, so
single-device training traces exactly the graph it always did.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name: str, replicas: int = 0, batch_size: int = 0) -> tf.distribute.Strategy:
    """The strategy `--strategy` names; create it before TensorFlow runs any op.

    - default: one device, no distribution.
    - mirrored: every GPU present, or the first `replicas`; on a machine
      without GPUs, the CPU split into `replicas` logical devices, which
      shows distribution working but is no faster (it must be asked for:
      silently training on one CPU would hide a missing GPU build).
    - multiworker: every machine `TF_CONFIG` names, each with all its GPUs
      (or its CPU); TensorFlow refuses to set it up once ops have run.

    Raises ValueError for a combination that cannot work, including a global
    `batch_size` that does not split evenly over the replicas.
    """
    strategy = _strategy(name, replicas)
    count = int(strategy.num_replicas_in_sync)
    if batch_size % count:
        raise ValueError(
            f"a batch of {batch_size} images does not split evenly over {count} replicas; "
            "choose --classes-per-batch and --examples-per-class to make it a multiple"
        )
    return strategy


def _strategy(name: str, replicas: int) -> tf.distribute.Strategy:
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    if replicas < 0:
        raise ValueError("--replicas must not be negative")
    if name == "default":
        if replicas > 1:
            raise ValueError("--replicas needs --strategy mirrored")
        return tf.distribute.get_strategy()
    if name == "multiworker":
        if replicas:
            raise ValueError("--replicas is for mirrored; multiworker uses each worker's GPUs")
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy multiworker reads its cluster from TF_CONFIG: unset")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if replicas > len(gpus):
            raise ValueError(f"--replicas {replicas}, but only {len(gpus)} GPUs are present")
        devices = [f"/gpu:{i}" for i in range(replicas or len(gpus))]
    elif replicas:
        devices = split_cpu(replicas)
    else:
        raise ValueError(
            "--strategy mirrored found no GPU (the pinned tensorflow-cpu sees none); "
            "--replicas N splits the CPU into N devices instead"
        )
    return tf.distribute.MirroredStrategy(devices)


def split_cpu(count: int) -> list[str]:
    """The CPU as `count` logical devices, for mirrored training without GPUs.

    TensorFlow fixes its devices when it first uses one, so this must run
    before any op; a process whose CPU is already split that way is fine.
    """
    import tensorflow as tf

    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        # Once devices are initialised this raises; the count is checked below.
        with suppress(RuntimeError):
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
            )
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    if len(devices) < count:
        raise ValueError(
            f"cannot split the CPU into {count} devices after TensorFlow has started; "
            "make the strategy first"
        )
    return devices[:count]


def distribute_batches(strategy: tf.distribute.Strategy, batches: tf.data.Dataset) -> Any:
    """Each replica's share of every global batch, in order, ready for `fit`.

    Every worker runs the same seeded sampler, so all draw the same global
    batches and each keeps its own replicas' slices. Keras' `fit` needs the
    shares to have one shape, so the batch must split evenly. With one replica
    the batches come back unchanged.
    """
    import tensorflow as tf

    replicas = int(strategy.num_replicas_in_sync)
    if replicas == 1:
        return batches
    size = tf.nest.flatten(batches.element_spec)[0].shape[0]
    if size is None or size % replicas:
        raise ValueError(f"batches of {size} images do not split evenly over {replicas} replicas")

    def worker_batches(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def shares(images: tf.Tensor, labels: tf.Tensor) -> tf.data.Dataset:
            images = tf.reshape(images, (replicas, -1, *images.shape[1:]))
            labels = tf.reshape(labels, (replicas, -1))
            mine = slice(first, first + local)
            return tf.data.Dataset.from_tensor_slices((images[mine], labels[mine]))

        return batches.flat_map(shares).prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(worker_batches)


def gather_replicas(labels: tf.Tensor, embeddings: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The global batch's labels and embeddings, on every replica.

    Called in the train step between the encoder and the loss; gradients flow
    back through the gather to each replica's own embeddings.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return labels, embeddings
    labels = context.all_gather(tf.reshape(labels, (-1,)), axis=0)
    return labels, context.all_gather(embeddings, axis=0)


def replica_share(loss: tf.Tensor) -> tf.Tensor:
    """The part of the global loss one replica differentiates: loss / replicas.

    Every replica computes the same global loss and the optimizer sums their
    gradients, so each contributes its share.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return loss
    return loss / float(context.num_replicas_in_sync)


def fit_log(value: tf.Tensor) -> tf.Tensor:
    """A train step's log value in a shape Keras' `fit` can average across workers.

    Across several workers Keras 3 averages logs along axis 0, which a scalar
    lacks (keras-team/keras#20585), so there it gets one; elsewhere the
    value is returned as it is.
    """
    import tensorflow as tf

    extended = tf.distribute.get_strategy().extended
    if getattr(extended, "_in_multi_worker_mode", lambda: False)():
        return tf.reshape(value, (1,))
    return value


@contextmanager
def synchronised_batch_norm(model: keras.Model) -> Iterator[int]:
    """BatchNorm over the global batch while training on several replicas.

    Keras' `synchronized` flag only changes how training computes moments, so
    it can be switched on for a built model, keras.applications backbones
    included, and off again afterwards so the exported file is the same
    whatever the strategy. Yields how many layers were switched.
    """
    import keras

    switched: list[Any] = []
    if model.distribute_strategy.num_replicas_in_sync > 1:
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
                layer.synchronized = True
                switched.append(layer)
    try:
        yield len(switched)
    finally:
        for layer in switched:
            layer.synchronized = False


def for_inference(strategy: tf.distribute.Strategy, model: keras.Model) -> keras.Model:
    """The same layers and weights as a model that predicts on one device.

    A Keras model remembers the strategy it was built under, and its
    `predict_on_batch` then runs the batch on every replica and concatenates
    the copies. This view, made outside the strategy's scope, embeds each
    batch once and exports the same file. With one replica it is the model.
    """
    import keras

    if strategy.num_replicas_in_sync == 1:
        return model
    return keras.Model(model.input, model.output, name=model.name)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the model: the chief, or worker 0 when none is named."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return "chief" not in cluster and resolver.task_type == "worker" and resolver.task_id == 0


def output_directory(strategy: tf.distribute.Strategy, out: Path) -> Path:
    """`out` for the chief, a scratch directory for every other worker.

    Every worker runs the whole program (the collectives need all of them) and
    would otherwise overwrite the chief's model directory with its own copy.
    """
    if is_chief(strategy):
        return out
    return Path(tempfile.mkdtemp(prefix="lookalike-worker-"))

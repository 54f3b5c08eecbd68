"""Mirrored training on two devices optimises the same objective as training on one.

The check runs in a child process (this file run as a module) because the CPU
can be split into logical devices only before TensorFlow initialises its
devices, which other tests in the pytest process have long since done. The
child trains the same tiny encoder on the same P x K batch for two steps, once
on the default strategy and once mirrored over two CPU devices, through
`trainer.fit` with plain SGD (Adam's first steps hardly depend on the
gradient's scale, so they could hide a wrong one), and reports losses and
weight updates as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LOSSES = ("multisimilarity", "supcon")
# 5 classes x 4 images: the replicas' shares of 10 each split classes between them.
CLASSES, PER_CLASS, SIZE = 5, 4, 16


def test_mirrored_steps_match_single_device() -> None:
    child = subprocess.run(
        [sys.executable, "-m", "tests.test_distributed_training"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    results = json.loads(child.stdout.strip().splitlines()[-1])
    for loss in LOSSES:
        single, mirrored = results[loss]["default"], results[loss]["mirrored"]
        assert mirrored["replicas"] == 2
        assert single["losses"][0] > 0.1, loss
        assert mirrored["losses"] == pytest.approx(single["losses"], rel=1e-5), loss
        assert results[loss]["worst_update_difference"] < 1e-3, loss
        assert single["smallest_update"] > 0, f"{loss}: some weight did not train"
    assert results["inference"] == {"rows": CLASSES * PER_CLASS, "same_config": True}
    assert "evenly" in results["uneven_batch"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--strategy", "multiworker"], "TF_CONFIG"),
        (["--replicas", "2"], "--strategy mirrored"),
        (["--strategy", "mirrored"], "no GPU"),
    ],
)
def test_strategy_mistakes_exit_2(
    options: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from training.cli import main

    if message == "no GPU" and _has_gpu():
        pytest.skip("this machine has a GPU for mirrored to use")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["train", "--out", str(tmp_path / "m"), "--quiet", *options]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def _child() -> dict[str, Any]:
    from training.runtime import configure

    configure(threads=2, seed=0)
    import keras
    import numpy as np
    import tensorflow as tf

    from training import distribute, trainer
    from training.losses import build_loss
    from training.models import EncoderSpec, build_encoder

    strategies = {
        "default": distribute.make_strategy("default"),
        "mirrored": distribute.make_strategy("mirrored", replicas=2),
    }
    trainer.make_optimizer = lambda lr, steps, decay: keras.optimizers.SGD(lr)  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (CLASSES * PER_CLASS, SIZE, SIZE, 3)).astype("float32")
    labels = np.repeat(np.arange(CLASSES), PER_CLASS).astype("int64")
    batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
    spec = EncoderSpec(image_size=(SIZE, SIZE), embedding_dim=8, width=4, depth=2)

    def train(strategy: Any, loss_name: str) -> tuple[dict[str, Any], list[Any]]:
        keras.utils.set_random_seed(0)
        with strategy.scope():
            encoder = build_encoder(spec, seed=0)
            loss = build_loss(loss_name, num_classes=CLASSES, embedding_dim=8)
            learner = trainer.MetricLearner(encoder, loss)
        before = encoder.get_weights()
        fitted = trainer.fit(learner, batches, epochs=2, steps_per_epoch=1, lr=0.5, verbose=0)
        after = encoder.get_weights()
        updates = [a - b for a, b in zip(after, before, strict=True)]
        report = {
            "replicas": strategy.num_replicas_in_sync,
            "losses": fitted.history["loss"],
            "smallest_update": min(float(np.abs(u).max()) for u in updates),
        }
        return report, updates

    results: dict[str, Any] = {}
    for loss_name in LOSSES:
        single, single_updates = train(strategies["default"], loss_name)
        mirrored, mirrored_updates = train(strategies["mirrored"], loss_name)
        worst = max(
            float(np.abs(a - b).max() / np.abs(a).max())
            for a, b in zip(single_updates, mirrored_updates, strict=True)
        )
        results[loss_name] = {
            "default": single,
            "mirrored": mirrored,
            "worst_update_difference": worst,
        }

    with strategies["mirrored"].scope():
        encoder = build_encoder(spec, seed=0)
    view = distribute.for_inference(strategies["mirrored"], encoder)
    results["inference"] = {
        "rows": int(view.predict_on_batch(images).shape[0]),
        "same_config": view.get_config() == encoder.get_config(),
    }
    try:
        distribute.make_strategy("mirrored", replicas=2, batch_size=15)
        results["uneven_batch"] = "accepted"
    except ValueError as error:
        results["uneven_batch"] = str(error)
    return results


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


if __name__ == "__main__":
    print(json.dumps(_child()))

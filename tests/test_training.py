"""`python -m training`: tiny end-to-end runs that export model directories to the contract.

Every run here is seconds long: 16x16 digits, a CNN a few filters wide, a few
dozen steps. They share one process so TensorFlow is imported once.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_training_data import class_image, write_folder
from training.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "16", "--width", "8", "--depth", "2", "--embedding-dim", "16", "--quiet"]
MODEL_KEYS = {
    "format_version": int,
    "model_id": str,
    "image_size": list,
    "embedding_dim": int,
    "metric": str,
    "match_threshold": float,
    "preprocessing": dict,
    "provenance": dict,
    "evaluation": dict,
}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Trained once for the module: 60 steps of the default loss on 16x16 digits (seconds)."""
    out = tmp_path_factory.mktemp("models") / "digits"
    schedule = ["--epochs", "4", "--steps-per-epoch", "15", "--lr", "0.01", "--seed", "0"]
    assert main(["train", "--out", str(out), *TINY, *schedule]) == 0
    return out, json.loads((out / "model.json").read_text())


def test_model_json_follows_the_contract(digits_model: tuple[Path, dict]) -> None:
    out, meta = digits_model
    for key, kind in MODEL_KEYS.items():
        assert isinstance(meta[key], kind), key
    assert meta["format_version"] == 1
    assert meta["model_id"] == hashlib.sha256((out / "encoder.keras").read_bytes()).hexdigest()
    assert meta["image_size"] == [16, 16]
    assert meta["embedding_dim"] == 16
    assert meta["metric"] == "cosine"
    assert -1.0 <= meta["match_threshold"] <= 1.0
    assert -1.0 <= meta["duplicate_threshold"] <= 1.0
    assert meta["preprocessing"] == {
        "resize": "bilinear",
        "fit": "stretch",
        "alpha_background": [255, 255, 255],
    }
    provenance = meta["provenance"]
    assert provenance["dataset"] == "digits"
    assert provenance["loss"] == "multisimilarity"
    assert 1 <= provenance["epochs"] <= 4
    assert provenance["created_at"].endswith("Z")
    assert set(provenance["library_versions"]) == {"tensorflow", "keras", "numpy", "python"}
    evaluation = meta["evaluation"]
    assert {"precision_at_1", "map_at_r", "calibration"} <= set(evaluation)
    assert set(evaluation["sets"]["held_out_images"]) == {
        "encoder",
        "untrained_encoder",
        "raw_pixels",
    }
    calibration = evaluation["calibration"]
    assert calibration["threshold"] == meta["match_threshold"]
    assert 0 <= calibration["precision"] <= 1
    assert 0 <= calibration["recall"] <= 1
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == len(history["seconds"]) == provenance["epochs"]
    assert 1 <= provenance["best_epoch"] <= provenance["epochs"]
    assert "val_map_at_r" in history


def test_encoder_loads_without_training_or_custom_objects(digits_model: tuple[Path, dict]) -> None:
    """A fresh interpreter that never imports training/ opens, runs and checks the encoder."""
    out, meta = digits_model
    script = """
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, numpy as np
model = keras.saving.load_model(sys.argv[1])
rng = np.random.default_rng(0)
shapes = {}
for h, w in ((16, 16), (40, 24), (9, 70)):
    y = np.asarray(model.predict(rng.uniform(0, 255, (3, h, w, 3)).astype("float32"), verbose=0))
    shapes[f"{h}x{w}"] = [list(y.shape), str(y.dtype), np.linalg.norm(y, axis=1).tolist()]
print(json.dumps({"shapes": shapes, "training": "training" in sys.modules}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(out / "encoder.keras")],
        capture_output=True,
        text=True,
        cwd=out,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["training"] is False
    for shape, dtype, norms in report["shapes"].values():
        assert shape == [3, meta["embedding_dim"]]
        assert dtype == "float32"
        np.testing.assert_allclose(norms, 1.0, atol=1e-4)


def test_a_few_steps_beat_the_untrained_encoder(digits_model: tuple[Path, dict]) -> None:
    sets = digits_model[1]["evaluation"]["sets"]["held_out_images"]
    assert sets["encoder"]["map_at_r"] > sets["untrained_encoder"]["map_at_r"] + 0.2


def test_evaluate_prints_a_table_and_json(
    digits_model: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    out, meta = digits_model
    code, text, _ = run(["evaluate", "--model", str(out), "--data", "digits", "--quiet"], capsys)
    assert code == 0
    for word in ("raw_pixels", "untrained_encoder", "map_at_r"):
        assert word in text
    code, text, _ = run(["evaluate", "--model", str(out), "--data", "digits", "--json"], capsys)
    figures = json.loads(text)["sets"]["held_out_images"]
    # The same split as at export, so the same figure.
    assert figures["encoder"]["map_at_r"] == pytest.approx(meta["evaluation"]["map_at_r"], abs=1e-4)
    assert {"linear_probe", "nmi", "recall_at_10"} <= set(figures["encoder"])


def test_folder_training_skips_and_counts_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_folder(tmp_path / "photos")
    out = tmp_path / "models" / "photos"
    args = ["train", "--data", str(data), "--out", str(out), *TINY, "--epochs", "1"]
    code, text, _ = run([*args, "--steps-per-epoch", "3", "--classes-per-batch", "3"], capsys)
    assert code == 0
    assert "skipped 2 unreadable files" in text
    meta = json.loads((out / "model.json").read_text())
    assert meta["provenance"]["skipped_files"] == 2
    assert meta["provenance"]["dataset"] == str(data)
    assert (out / "encoder.keras").is_file()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root, "no images"),
        (lambda root: write_folder(root / "one", classes=1, corrupt=False), "one class"),
    ],
    ids=["missing", "empty", "one-class"],
)
def test_unusable_folders_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    code, _, err = run(
        ["train", "--data", str(make(tmp_path)), "--out", str(tmp_path / "m"), "--quiet"], capsys
    )
    assert code == 2
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_unlabeled_folder_trains_on_augmented_views(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "catalogue"
    data.mkdir()
    for index in range(12):
        class_image(index % 4, index).save(data / f"item{index}.png")
    out = tmp_path / "m"
    args = ["train", "--data", str(data), "--unlabeled", "--out", str(out), *TINY]
    code, text, _ = run(
        [*args, "--epochs", "1", "--steps-per-epoch", "2", "--classes-per-batch", "4"], capsys
    )
    assert code == 0, text
    meta = json.loads((out / "model.json").read_text())
    assert meta["provenance"]["unlabeled"] is True
    assert "duplicate_threshold" in meta
    assert set(meta["evaluation"]["near_duplicates"]) == {
        "encoder",
        "untrained_encoder",
        "raw_pixels",
    }


def test_holdout_classes_and_classification_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "baseline"
    args = [
        "train",
        "--out",
        str(out),
        *TINY,
        "--holdout-classes",
        "4",
        "--classification-baseline",
    ]
    code, text, _ = run([*args, "--epochs", "1", "--steps-per-epoch", "3"], capsys)
    assert code == 0
    assert "held_out_classes" in text
    meta = json.loads((out / "model.json").read_text())
    assert meta["provenance"]["loss"] == "softmax_classification"
    assert meta["provenance"]["split"]["unseen_classes"] == ["6", "7", "8", "9"]
    assert "unseen_classes_map_at_r" in meta["evaluation"]
    assert set(meta["evaluation"]["sets"]["held_out_classes"]) == {
        "encoder",
        "untrained_encoder",
        "raw_pixels",
    }


def test_triplet_curriculum_with_memory_and_margin_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "triplet"
    loss = ["--loss", "triplet", "--mining", "curriculum", "--curriculum-epochs", "1"]
    extra = ["--margin", "0.3", "--xbm-size", "160", "--early-stopping-patience", "1"]
    code, _, err = run(
        [
            "train",
            "--out",
            str(out),
            *TINY,
            *loss,
            *extra,
            "--epochs",
            "2",
            "--steps-per-epoch",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    training = json.loads((out / "model.json").read_text())["provenance"]["training"]
    assert (training["mining"], training["xbm_size"], training["margin"]) == (
        "curriculum",
        160,
        0.3,
    )


def test_class_transforms_train_on_extra_classes_and_are_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rotated"
    args = ["train", "--out", str(out), *TINY, "--class-transforms", "rotations,flip"]
    extra = ["--pooling", "flatten", "--loss", "arcface", "--holdout-classes", "5"]
    code, _, err = run([*args, *extra, "--epochs", "1", "--steps-per-epoch", "3"], capsys)
    assert code == 0, err
    provenance = json.loads((out / "model.json").read_text())["provenance"]
    assert provenance["training"]["class_transforms"] == ["rot90", "rot180", "rot270", "flip"]
    assert provenance["encoder"]["pooling"] == "flatten"
    # Only training is expanded: the split still reports digits' own classes and images.
    assert provenance["split"]["unseen_classes"] == ["5", "6", "7", "8", "9"]
    code, _, err = run(
        [*args, "--image-size", "16x24", "--epochs", "1", "--steps-per-epoch", "1"], capsys
    )
    assert code == 2
    assert "square" in err


def test_contradictory_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["train", "--out", str(tmp_path / "m"), "--loss", "supcon", "--margin", "0.2"], capsys
    )
    assert code == 2
    assert "margin" in err
    code, _, err = run(
        ["train", "--out", str(tmp_path / "m"), "--unlabeled", "--augment", "none"], capsys
    )
    assert code == 2
    assert "augment" in err


def test_ensemble_trains_members_from_consecutive_seeds_and_exports_one_encoder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    out = tmp_path / "ensemble"
    schedule = ["--epochs", "1", "--steps-per-epoch", "3", "--seed", "5", "--ensemble", "2"]
    code, printed, err = run(["train", "--out", str(out), *TINY, *schedule], capsys)
    assert code == 0, err
    assert "members' weights of epochs 1 of 1, 1 of 1" in printed
    meta = json.loads((out / "model.json").read_text())
    assert meta["embedding_dim"] == 32  # two members of --embedding-dim 16, side by side
    assert meta["provenance"]["training"]["ensemble"] == 2
    assert [m["seed"] for m in meta["provenance"]["ensemble"]] == [5, 6]
    history = json.loads((out / "history.json").read_text())
    assert {"member0_loss", "member1_loss"} <= set(history)

    encoder = keras.saving.load_model(out / "encoder.keras", compile=False)
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    joined = np.asarray(encoder(images))
    assert np.allclose(np.linalg.norm(joined, axis=1), 1.0, atol=1e-5)
    first, second = (np.asarray(encoder.get_layer(f"member_{i}")(images)) for i in (0, 1))
    # Different seeds, different networks; the ensemble's cosine is the mean of theirs.
    assert not np.allclose(first, second, atol=1e-3)
    expected = (first @ first.T + second @ second.T) / 2
    assert np.allclose(joined @ joined.T, expected, atol=1e-5)


def test_ensemble_size_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["train", "--out", str(tmp_path / "m"), *TINY, "--ensemble", "17"], capsys)
    assert code == 2
    assert "--ensemble" in err
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "m"), "--ensemble", "0"])


def test_export_writes_a_litert_file_that_embeds_like_the_encoder(
    digits_model: tuple[Path, dict],
) -> None:
    import keras

    from training.litert import probe_images, run_litert

    out, meta = digits_model
    litert = meta["litert"]
    assert litert["file"] == "encoder.tflite"
    assert litert["probe"] == "litert-probe.npz"
    assert litert["model_id"] == meta["model_id"]
    flatbuffer = (out / "encoder.tflite").read_bytes()
    assert litert["sha256"] == hashlib.sha256(flatbuffer).hexdigest()
    assert 0 <= litert["max_difference"] <= 1e-4
    encoder = keras.saving.load_model(out / "encoder.keras")
    with np.load(out / "litert-probe.npz") as probe:
        images, embeddings = probe["images"], probe["embeddings"]
    np.testing.assert_array_equal(images, probe_images(16, 16))
    np.testing.assert_allclose(
        embeddings, encoder(images.astype("float32"), training=False), atol=1e-6
    )
    fresh = np.random.default_rng(5).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        run_litert(flatbuffer, fresh), encoder(fresh.astype("float32"), training=False), atol=1e-5
    )


def test_litert_probe_reaches_both_ends_of_the_pixel_range_and_matches_the_services() -> None:
    from app.model_runtime import probe_images as service_probe
    from training.litert import probe_images

    images = probe_images(13, 21)
    assert images.dtype == np.uint8
    assert images.shape == (8, 13, 21, 3)
    flat, shaped = images[:3], images[3:6]
    assert [(int(i.min()), int(i.max())) for i in flat] == [(0, 0), (255, 255), (128, 128)]
    assert [(int(i.min()), int(i.max())) for i in shaped] == [(0, 255)] * 3
    assert len({i.tobytes() for i in images}) == len(images)
    np.testing.assert_array_equal(service_probe(13, 21), images)


def test_litert_command_adds_the_file_to_a_model_exported_without_one(
    digits_model: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    out, meta = digits_model
    older = shutil.copytree(out, tmp_path / "older")
    (older / "encoder.tflite").unlink()
    (older / "litert-probe.npz").unlink()
    without = {key: value for key, value in meta.items() if key != "litert"}
    (older / "model.json").write_text(json.dumps(without))
    code, stdout, _ = run(["litert", "--model", str(older)], capsys)
    assert code == 0
    assert "encoder.tflite" in stdout
    added = json.loads((older / "model.json").read_text())
    assert {key: value for key, value in added.items() if key != "litert"} == without
    assert (
        added["litert"]["sha256"]
        == hashlib.sha256((older / "encoder.tflite").read_bytes()).hexdigest()
    )
    assert (older / "litert-probe.npz").is_file()
    assert not list(older.glob(".export-*"))
    (older / "model.json").write_text(json.dumps({**without, "image_size": 32}))
    code, _, stderr = run(["litert", "--model", str(older)], capsys)
    assert code == 2
    assert "no usable image_size" in stderr
    (older / "encoder.keras").write_bytes(b"replaced")
    code, _, stderr = run(["litert", "--model", str(older)], capsys)
    assert code == 2
    assert "does not match the model_id" in stderr


def test_an_encoder_litert_cannot_match_is_exported_without_the_file(
    digits_model: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import keras

    from training import litert
    from training.export import LiteRtWarning, export_model

    out, meta = digits_model
    target = shutil.copytree(out, tmp_path / "again")  # an earlier export's LiteRT file is there
    monkeypatch.setattr(litert, "AGREEMENT", -1.0)  # no conversion is close enough
    with pytest.warns(LiteRtWarning, match="differs from Keras"):
        exported = export_model(
            keras.saving.load_model(out / "encoder.keras"),
            target,
            image_size=(16, 16),
            match_threshold=meta["match_threshold"],
            provenance={"dataset": "digits", "loss": "multisimilarity", "epochs": 1},
            evaluation={},
        )
    assert "litert" not in exported
    assert not (target / "encoder.tflite").exists()
    assert not (target / "litert-probe.npz").exists()
    assert json.loads((target / "model.json").read_text()) == exported

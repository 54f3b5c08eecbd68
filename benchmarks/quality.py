"""Which loss learns embeddings that generalise: every loss on class-disjoint halves.

As in "A Metric Learning Reality Check" (Musgrave et al., 2020), each built-in
set is cut into two halves of classes: training sees only the first, and the
figure that matters is retrieval on the second, which no loss ever saw. Every
loss and the softmax classification baseline get the same recipe, budget and
seed, and every row sits beside raw pixels and the untrained encoder, because
on digits raw pixels already reach P@1 0.98; MAP@R is the headline for that
reason. Then an embedding-size sweep on the best loss, and the unlabeled mode
(labels hidden) against raw pixels on near-duplicate retrieval.

    .venv/bin/python -m benchmarks.quality                  # the full run, ~15 min on 2 cores
    .venv/bin/python -m benchmarks.quality --quick --sets digits --losses supcon

Each run goes through `training.train.train`, the same path as
`python -m training train`, so a row here is a model anyone can export.
Writes its own section of benchmarks/RESULTS.md (see benchmarks/results.py).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.results import machine, update_section, versions

LOSSES = ("contrastive", "triplet", "npairs", "multisimilarity", "supcon", "triplet_ce", "arcface")
CLASSIFICATION = "classification"
RAW_PIXELS = "raw pixels"
UNTRAINED = "untrained encoder"
SETS = ("digits", "glyphs")
HOLDOUT = {"digits": 5, "glyphs": 31}
"""Unseen classes: digits 5-9; glyphs, the second half of 0-9A-Za-z (from "V" on)."""
DESCRIPTIONS = {"digits": "scikit-learn's 1,797 handwritten digits, 8x8 upscaled to 32x32"}
SWEEP_DIMS = (8, 16, 32, 64, 128, 256)
QUICK_SWEEP_DIMS = (8, 16)
FIGURES = ("precision_at_1", "r_precision", "map_at_r")
TARGETS = {
    ("digits", "held_out_images"): 0.99,
    ("digits", "held_out_classes"): 0.70,
    ("glyphs", "held_out_classes"): 0.60,
}


@dataclass(frozen=True)
class Recipe:
    """The one training recipe every method shares, so only the loss differs.

    Chosen by the experiments recorded in RESULTS.md; each field is a
    `python -m training train` option of the same name.
    """

    epochs: int = 10
    steps_per_epoch: int = 20
    lr: float = 3e-3
    weight_decay: float = 0.1
    augment: str = "auto"
    dropout: float = 0.0
    embedding_dim: int = 64
    early_stopping_patience: int = 0
    seed: int = 0

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def options(self) -> str:
        return (
            f"--epochs {self.epochs} --steps-per-epoch {self.steps_per_epoch} --lr {self.lr:g} "
            f"--weight-decay {self.weight_decay:g} --augment {self.augment} "
            f"--dropout {self.dropout:g} --embedding-dim {self.embedding_dim} "
            f"--early-stopping-patience {self.early_stopping_patience} --seed {self.seed}"
        )


QUICK = Recipe(epochs=1, steps_per_epoch=2)

TUNING = """\
### How the recipe was chosen (tuning runs, 2026-11-23, digits, seed 0)

One-off runs of `training.train.train` on digits, multi-similarity unless named,
10 epochs x 20 steps, the best epoch by validation MAP@R kept. Figures are MAP@R on
held-out images / on unseen 5-9. They were read to pick the recipe above, so the
digits unseen figures below it are not untouched; glyphs was not used for tuning.

| run | held-out | unseen 5-9 |
|---|---|---|
| trainer defaults (lr 0.01, weight decay 1e-4, 8 x 50 steps, patience 4) | 0.993 | 0.400 |
| `--validation-classes 2` (train 0-2, stop on 3-4), lr 0.01 | 0.878 | 0.229 |
| same, lr 0.001 | 0.956 | 0.251 |
| same, lr 0.001, weight decay 0.05 | 0.982 | 0.285 |
| same, lr 0.001, weight decay 0.05, augment crop=0.3,rotate=25,blur=1 | 0.936 | 0.310 |
| lr 0.001, weight decay 0.05 | 0.983 | 0.448 |
| lr 0.01, weight decay 0.05, 10 x 40 steps | 0.993 | 0.412 |
| **lr 0.003, weight decay 0.1** (chosen) | 0.992 | 0.441 |
| lr 0.001, weight decay 0.05, dropout 0.3, embedding 128 | 0.990 | 0.322 |
| supcon, temperature 0.5, lr 0.001 | 0.985 | 0.398 |
| supcon, temperature 1.0, lr 0.001, embedding 256 | 0.976 | 0.357 |
| classification baseline, lr 0.001 | 0.970 | 0.329 |
| unlabeled (supcon on two views), lr 0.001 | 0.324 | 0.351 |
| unlabeled, lr 0.01 | 0.259 | 0.308 |

With `--validation-classes 2` the held-out column is images of 0-2 only. Its
validation MAP@R on 3-4 peaked at 0.61-0.74 and did not predict 5-9. Unlabeled
near-duplicate P@1 was 0.817 at lr 0.001 and 0.733 at lr 0.01 (raw pixels 0.472).

What mattered: weight decay (AdamW, 0.05-0.1 instead of 1e-4) kept held-out images
at 0.99 with half the steps and lifted unseen 5-9 from 0.40 to 0.44-0.45. Stopping
on unseen validation classes hurt: on digits it takes 2 of the 5 training classes
away, and that costs more than the better stopping point gains. Dropout, a higher
SupCon temperature and a wider embedding hurt. Stronger augmentation helped unseen
classes a little (0.285 to 0.310) but cost held-out images. On digits no recipe
tried got unseen 5-9 near raw pixels (0.633). Five training classes of about
120 images each seem to be too few for an embedding that transfers: it keeps
about five directions and maps new digits onto them (the untrained encoder
keeps more, 0.476).

Reading the run of 2026-11-23 below: multi-similarity was best on the unseen half of
both sets; contrastive lost on glyphs (0.328) and triplet + cross-entropy on digits
(0.343); the classification baseline was mid-table on digits and second-last on
glyphs. Digits peak within the budget (best epochs 4-10); glyphs kept their last
or second-last epoch, so 200 steps under-train them: multi-similarity at
`--steps 400` reached held-out 0.933 / unseen 0.527 (raw pixels 0.130 / 0.142),
and at `--steps 800` held-out 0.964 / unseen 0.575 (best epoch 10 of 10),
still short of the 0.60 target and still rising. The embedding sweep says a wider
embedding transfers better (unseen 0.371 at 8 dims, 0.489 at 256) for a little on
held-out images (0.992 at 64, 0.984 at 256). Glyphs raw pixels
score 0.142 on the unseen half here, with 114 faces; the issue's 0.358 came from
141 faces.
"""


@dataclass
class Run:
    """One trained model's figures: set -> method -> figure, and what it cost."""

    set_name: str
    method: str
    figures: dict[str, dict[str, dict[str, float]]]
    seconds: float
    best_epoch: int
    epochs_run: int
    description: str
    duplicates: dict[str, dict[str, float]]


def train_once(set_name: str, method: str, recipe: Recipe, *, unlabeled: bool = False) -> Run:
    """Train and measure one model with the trainer's own `train`, exporting to a temp dir."""
    from training.models import EncoderSpec
    from training.train import TrainConfig, train

    with tempfile.TemporaryDirectory(prefix="quality-") as out:
        config = TrainConfig(
            data=set_name,
            out=Path(out) / "model",
            unlabeled=unlabeled,
            holdout_classes=HOLDOUT[set_name],
            encoder=EncoderSpec(embedding_dim=recipe.embedding_dim, dropout=recipe.dropout),
            loss=method if method in LOSSES else "multisimilarity",
            classification_baseline=method == CLASSIFICATION,
            epochs=recipe.epochs,
            steps_per_epoch=recipe.steps_per_epoch,
            lr=recipe.lr,
            weight_decay=recipe.weight_decay,
            augment=recipe.augment,
            early_stopping_patience=recipe.early_stopping_patience,
            seed=recipe.seed,
            verbose=0,
            progress=False,
        )
        result = train(config)
    description = str(result.model_json.get("provenance", {}).get("dataset_description", ""))
    return Run(
        set_name,
        method,
        result.figures,
        result.seconds,
        result.best_epoch,
        result.epochs_run,
        description,
        result.duplicates,
    )


def rows_of(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per trained method, then the two baselines (identical in every run: same seed)."""
    rows = [_row(run.method, run.figures, "encoder", run) for run in runs]
    if runs:
        first = runs[0].figures
        rows.append(_row(RAW_PIXELS, first, "raw_pixels"))
        rows.append(_row(UNTRAINED, first, "untrained_encoder"))
    return rows


def _row(
    method: str,
    figures: dict[str, dict[str, dict[str, float]]],
    key: str,
    run: Run | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method}
    for set_name in ("held_out_images", "held_out_classes"):
        measured = figures.get(set_name, {}).get(key, {})
        row[set_name] = {name: round(measured[name], 4) for name in FIGURES if name in measured}
    row["seconds"] = round(run.seconds, 1) if run else None
    row["best_epoch"] = run.best_epoch if run else None
    return row


def best_method(rows: Sequence[dict[str, Any]]) -> str:
    """The trained method with the highest MAP@R on unseen classes: the hard half."""
    trained = [r for r in rows if r["method"] not in (RAW_PIXELS, UNTRAINED)]
    return str(max(trained, key=lambda r: r["held_out_classes"].get("map_at_r", 0.0))["method"])


def check_targets(sets: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, met or missed, for the best row of each set."""
    checks: list[dict[str, Any]] = []
    for (set_name, part), target in TARGETS.items():
        if set_name not in sets:
            continue
        rows = sets[set_name]["rows"]
        best = next(r for r in rows if r["method"] == sets[set_name]["best"])
        value = best[part].get("map_at_r", 0.0)
        checks.append(
            {
                "set": set_name,
                "part": part,
                "method": best["method"],
                "map_at_r": value,
                "target": target,
                "met": value >= target,
            }
        )
    for set_name, entry in sets.items():
        rows = {r["method"]: r for r in entry["rows"]}
        best = rows[entry["best"]]
        for part in ("held_out_images", "held_out_classes"):
            value = best[part].get("map_at_r", 0.0)
            beaten = max(rows[b][part].get("map_at_r", 0.0) for b in (RAW_PIXELS, UNTRAINED))
            checks.append(
                {
                    "set": set_name,
                    "part": part,
                    "method": best["method"],
                    "map_at_r": value,
                    "target": "above raw pixels and untrained encoder",
                    "baseline": beaten,
                    "met": value > beaten,
                }
            )
    return checks


def markdown_table(rows: Sequence[dict[str, Any]], first: str = "method") -> str:
    header = (
        f"| {first} | held-out P@1 | R-prec | MAP@R | unseen P@1 | R-prec | MAP@R "
        "| run s | best epoch |"
    )
    lines = [header, "|" + "---|" * 9]
    for row in rows:
        cells = [str(row[first])]
        for part in ("held_out_images", "held_out_classes"):
            cells += [f"{row[part].get(name, float('nan')):.3f}" for name in FIGURES]
        cells.append("" if row["seconds"] is None else f"{row['seconds']:.0f}")
        cells.append("" if row["best_epoch"] is None else str(row["best_epoch"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def duplicates_table(figures: dict[str, dict[str, float]]) -> str:
    lines = ["| method | P@1 | recall@5 |", "|---|---|---|"]
    for method, row in figures.items():
        lines.append(f"| {method} | {row['precision_at_1']:.3f} | {row['recall_at_5']:.3f} |")
    return "\n".join(lines)


def run_benchmark(
    sets: Sequence[str],
    methods: Sequence[str],
    recipe: Recipe,
    sweep_dims: Sequence[int],
    unlabeled: bool,
) -> dict[str, Any]:
    result: dict[str, Any] = {"recipe": asdict(recipe), "sets": {}}
    for set_name in sets:
        runs = []
        for method in methods:
            run = train_once(set_name, method, recipe)
            runs.append(run)
            print(f"{set_name} {method}: {_summary(run)}", file=sys.stderr, flush=True)
        rows = rows_of(runs)
        result["sets"][set_name] = {
            "description": runs[0].description if runs else "",
            "holdout_classes": HOLDOUT[set_name],
            "rows": rows,
            "best": best_method(rows),
        }
    if sweep_dims and result["sets"]:
        set_name = sets[0]
        best = result["sets"][set_name]["best"]
        sweep = []
        for dim in sweep_dims:
            run = train_once(set_name, best, replace(recipe, embedding_dim=dim))
            print(f"{set_name} {best} dim {dim}: {_summary(run)}", file=sys.stderr, flush=True)
            sweep.append({**_row(best, run.figures, "encoder", run), "embedding_dim": dim})
        result["embedding_sweep"] = {"set": set_name, "method": best, "rows": sweep}
    if unlabeled:
        run = train_once("digits", "supcon", recipe, unlabeled=True)
        print(f"digits unlabeled: {_summary(run)}", file=sys.stderr, flush=True)
        result["unlabeled"] = {
            "set": "digits",
            "loss": "supcon",
            "seconds": round(run.seconds, 1),
            "near_duplicates": run.duplicates,
        }
    result["targets"] = check_targets(result["sets"])
    return result


def _summary(run: Run) -> str:
    def figure(part: str) -> float:
        return run.figures.get(part, {}).get("encoder", {}).get("map_at_r", float("nan"))

    held, unseen = figure("held_out_images"), figure("held_out_classes")
    return f"MAP@R held-out {held:.3f} unseen {unseen:.3f} ({run.seconds:.0f} s)"


def report(result: dict[str, Any]) -> str:
    """The whole result as Markdown: printed, and written into RESULTS.md."""
    parts = []
    for set_name, entry in result["sets"].items():
        description = entry["description"] or DESCRIPTIONS.get(set_name, "")
        parts.append(
            f"### {set_name}: {description}, last {entry['holdout_classes']} "
            f"classes unseen (best: {entry['best']})\n\n{markdown_table(entry['rows'])}"
        )
    if "embedding_sweep" in result:
        sweep = result["embedding_sweep"]
        parts.append(
            f"### Embedding size, {sweep['method']} on {sweep['set']}\n\n"
            + markdown_table(sweep["rows"], first="embedding_dim")
        )
    if "unlabeled" in result:
        unlabeled = result["unlabeled"]
        parts.append(
            "### Unlabeled mode on digits (labels hidden, positives = two augmented views), "
            "near-duplicate retrieval of augmented copies of held-out images\n\n"
            + duplicates_table(unlabeled["near_duplicates"])
        )
    lines = []
    for check in result["targets"]:
        verdict = "met" if check["met"] else "MISSED"
        against = check.get("baseline")
        target = f"{check['target']} ({against:.3f})" if against is not None else check["target"]
        lines.append(
            f"- {check['set']} {check['part']}: {check['method']} MAP@R "
            f"{check['map_at_r']:.3f} vs {target}: {verdict}"
        )
    parts.append("### Targets\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget, for the smoke test")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument(
        "--losses",
        nargs="+",
        choices=(*LOSSES, CLASSIFICATION),
        default=[*LOSSES, CLASSIFICATION],
        help="methods to train (classification: the softmax baseline)",
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps per run")
    parser.add_argument("--no-sweep", action="store_true", help="skip the embedding-size sweep")
    parser.add_argument("--no-unlabeled", action="store_true", help="skip the unlabeled run")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument(
        "--no-write", action="store_true", help="leave benchmarks/RESULTS.md untouched"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="rewrite the table and section from a saved --json result, training nothing",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        return _publish(result, args.json, write=not args.no_write)

    from training.runtime import configure

    recipe = QUICK if args.quick else Recipe()
    if args.steps:
        epochs = min(recipe.epochs, args.steps)
        recipe = replace(recipe, epochs=epochs, steps_per_epoch=max(1, args.steps // epochs))
    configure(threads=0, verbose=False, seed=recipe.seed)
    started = time.perf_counter()
    result = run_benchmark(
        args.sets,
        args.losses,
        recipe,
        () if args.no_sweep else (QUICK_SWEEP_DIMS if args.quick else SWEEP_DIMS),
        unlabeled=not args.no_unlabeled,
    )
    command = "python -m benchmarks.quality " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    result["command"] = command.strip()
    result["machine"] = machine()
    result["versions"] = versions("tensorflow-cpu", "keras", "numpy", "scikit-learn", "faiss-cpu")
    result["seconds"] = round(time.perf_counter() - started, 1)
    return _publish(result, args.json, write=not args.no_write)


def _publish(result: dict[str, Any], json_path: Path | None, *, write: bool) -> int:
    text = report(result)
    print(text)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
    if write:
        update_section("quality", _section(result, text))
    return 0


def _section(result: dict[str, Any], text: str) -> str:
    recipe = Recipe(**result["recipe"])
    return "\n\n".join(
        [
            "## Retrieval quality: every loss on class-disjoint halves",
            "Musgrave et al. (2020)'s protocol: train on the first half of the classes, "
            "report on held-out images of those classes and on the unseen second half. "
            "Same recipe, budget and seed for every method "
            f"(small CNN, `{recipe.options()}`; batches of 8 images from each of 10 classes, "
            "or of all 5 seen digits). "
            "Raw pixels are mean-centred and L2-normalised; the untrained encoder is the "
            "same network at its initial weights. Each run keeps the epoch with the best "
            "validation MAP@R on a tenth of the seen classes' images. MAP@R is the headline "
            "figure; run s is the whole run (training, evaluation, export) on a shared "
            "machine. A set's best method is the one with the highest MAP@R on its unseen "
            "classes, and the embedding-size sweep uses the best method on the first set.",
            text,
            TUNING,
            f"- machine: {result['machine']}\n- versions: {result['versions']}\n"
            f"- command: `{result['command']}` ({result['seconds']:.0f} s in all)",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())

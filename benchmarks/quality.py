"""Which loss learns embeddings that generalise: every loss on class-disjoint halves.

As in "A Metric Learning Reality Check" (Musgrave et al., 2020), each built-in
set is cut into two halves of classes: training sees only the first, and the
figure that matters is retrieval on the second, which no loss ever saw. Every
loss and the softmax classification baseline get the same recipe, budget and
seed, and every row sits beside raw pixels and the untrained encoder, because
on digits raw pixels already reach P@1 0.98; MAP@R is the headline for that
reason. Then the best loss of each set once more as an ensemble of three
seeds (`--ensemble 3`: three times the budget, marked as such), an
embedding-size sweep on the best loss, and the unlabeled mode (labels hidden)
against raw pixels on near-duplicate retrieval.

    .venv/bin/python -m benchmarks.quality                  # the full run, 20-40 min on 2 cores
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
ENSEMBLE = 3
"""Members of the ensemble row: the best loss trained from seeds 0, 1 and 2."""
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

    epochs: int = 20
    steps_per_epoch: int = 20
    lr: float = 3e-3
    weight_decay: float = 0.1
    augment: str = "auto"
    dropout: float = 0.0
    embedding_dim: int = 128
    pooling: str = "flatten"
    class_transforms: str = "auto"
    early_stopping_patience: int = 0
    seed: int = 0

    def for_set(self, set_name: str) -> Recipe:
        """`auto` class transforms resolved for one set (see CLASS_TRANSFORMS)."""
        if self.class_transforms != "auto":
            return self
        return replace(self, class_transforms=CLASS_TRANSFORMS.get(set_name, "none"))

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def options(self) -> str:
        return (
            f"--epochs {self.epochs} --steps-per-epoch {self.steps_per_epoch} --lr {self.lr:g} "
            f"--weight-decay {self.weight_decay:g} --augment {self.augment} "
            f"--dropout {self.dropout:g} --embedding-dim {self.embedding_dim} "
            f"--pooling {self.pooling} --class-transforms {self.class_transforms} "
            f"--early-stopping-patience {self.early_stopping_patience} --seed {self.seed}"
        )


QUICK = Recipe(epochs=1, steps_per_epoch=2)
CLASS_TRANSFORMS = {"digits": "dihedral", "glyphs": "none"}
"""Rotated and mirrored classes where no transformed class is another class of the set.

Digits 0-4 turned or mirrored look like no digit; among letters and digits
they do (b/d/p/q, n/u, M/W, 6/9), and training "6 turned over" as a class
apart from "9" would teach a contradiction.
"""

TUNING = """\
### How the recipe was chosen (tuning runs on digits, 2026-11-22 and 2026-11-23)

One-off runs of `training.train.train` (multi-similarity unless named, seed 0, best
epoch by validation MAP@R on seen images kept). Figures are MAP@R on held-out images
of 0-4 / on unseen 5-9. They were read to pick the recipe above, so **the digits
unseen figures are not untouched test figures**; glyphs was not used for tuning
(three runs at the end, with the recipe already fixed, checked it).

First session (small CNN with global average pooling, 64-d, 10 x 20 steps unless named):

| run | held-out | unseen 5-9 |
|---|---|---|
| trainer defaults (lr 0.01, weight decay 1e-4, 8 x 50 steps, patience 4) | 0.993 | 0.400 |
| `--validation-classes 2` (train 0-2, stop on 3-4), lr 0.001, weight decay 0.05 | 0.982 | 0.285 |
| lr 0.001, weight decay 0.05 | 0.983 | 0.448 |
| lr 0.003, weight decay 0.1 | 0.992 | 0.441 |
| lr 0.001, weight decay 0.05, dropout 0.3, embedding 128 | 0.990 | 0.322 |
| supcon, temperature 0.5, lr 0.001 | 0.985 | 0.398 |
| unlabeled (supcon on two views), lr 0.001 | 0.324 | 0.351 |

Second session (lr 0.003, weight decay 0.1; raw pixels 0.633 on 5-9):

| run | held-out | unseen 5-9 |
|---|---|---|
| average pooling, 64-d, 200 steps (the first session's recipe) | 0.992 | 0.443 |
| `--pooling flatten` | 0.994 | 0.474 |
| `--pooling max` | 0.988 | 0.495 |
| flatten, 256-d / depth 2 / depth 1 / width 32 / 16x16 input | 0.987-0.995 | 0.440-0.480 |
| flatten, weight decay 0.3 / lr 0.001 / no or stronger augmentation | 0.977-0.998 | 0.440-0.495 |
| flatten, supcon / triplet | 0.986 / 0.998 | 0.419 / 0.444 |
| flatten, 5 / 15 / 40 steps at lr 0.001 | 0.636 / 0.764 / 0.962 | 0.505 / 0.511 / 0.488 |
| pretrained on glyph letters (no digits), fine-tuned at lr 0.001 | 0.986 | 0.430 |
| flatten, class transforms rot90,rot180,rot270,flip (25 classes), 200 steps | 0.968 | 0.621 |
| average pooling, same transforms | 0.956 | 0.576 |
| flatten, dihedral (40 classes), 400 steps | 0.981 | 0.616 |
| **flatten, dihedral, 128-d, 400 steps** | 0.977 | 0.683 |
| same, seed 1 (another split) | 0.982 | 0.674 |
| same, 800 steps | 0.979 | 0.669 |
| same, 256-d at 400 / 800 steps | 0.986 / 0.987 | 0.657 / 0.648 |
| same, lr 0.01 / weight decay 0.3 | 0.978 / 0.984 | 0.662 / 0.671 |
| same, 20 classes x 4 images per batch | 0.913 | 0.599 |
| average pooling, dihedral, 64-d, 400 steps | 0.979 | 0.649 |
| the same with `--class-transforms` as built (copies made on the fly) | 0.986 | 0.633 |
| same, arcface / triplet + cross-entropy | 0.947 / 0.978 | 0.691 / 0.681 |
| **same, the 5 real classes in half of every batch** (chosen; the trainer's) | 0.992 | 0.672 |
| same, arcface | 0.976 | 0.589 |

What mattered, in order: **class transforms** (training on rotated and mirrored
copies of each class as new classes) lifted unseen 5-9 from about 0.47 to 0.62-0.68,
the only change that got above raw pixels: with five classes the embedding keeps
about five directions, and forty classes make it keep more. Weight decay
(AdamW 0.05-0.1 instead of 1e-4) came next; then flatten or max pooling instead
of average pooling (+0.03-0.05: digits are aligned, so where a stroke is matters);
a wider embedding helps with the extra classes (128-d) but not without them.
Stopping early on unseen validation classes hurt (it takes 2 of the 5 training
classes away), as did dropout and a higher SupCon temperature; more steps,
stronger augmentation and pretraining on rendered letters did not help. The
extra classes cost held-out images (0.95-0.98 instead of 0.99) until the sampler
put the real classes in half of every batch (0.992). The same recipe moves by
0.03-0.05 on unseen 5-9 with nothing but the order batches are drawn in (0.683
with the transformed copies made up front, 0.633 with them made on the fly), so
differences smaller than that in these tables are noise. Without labels to rotate, the unlabeled run
keeps the old recipe's transforms off.

Glyphs: the first session rendered each face in a frame set by its declared
ascent and descent, which varies a lot between faces; raw pixels scored 0.142
on the unseen half. Frames are now scaled to each face's capital height (raw
pixels 0.369, close to the issue's 0.358 with 141 faces). With the new frames
multi-similarity reached 0.622 on the unseen half with the first session's recipe
(average pooling, 64-d, 200 steps) and 0.630 with flatten pooling. Glyphs get no
class transforms: turned letters are other letters (b/d/p/q, n/u, 6/9).

Third session (2026-11-23): seeds, then ensembles. The quality recipe trained
from seeds 0, 1 and 2 scored 0.672, 0.661 and 0.691 on unseen 5-9 (held-out
images 0.992, 0.998, 1.000); the same three networks joined as one encoder
(embeddings side by side, so the cosine is the mean of theirs) scored 0.739
(held-out 0.999), two of them 0.713. Members from different seeds get the
seen classes equally right and the unseen ones wrong in different ways, so
averaging their similarities removes much of the noise described above. Tried
in the same session and not kept: centring the embeddings on the training
images' mean before normalising (0.664 against 0.672; centring on the unseen
images themselves gave 0.686 but uses the test set), and whitening them (held-out
images fell to 0.39-0.59).

Reading the run of 2026-11-23 (04:56) above: the sweep's 128-d row is the table's
multi-similarity configuration run again (0.664 on unseen 5-9 against the
table's 0.679, and 0.619 against 0.672 in the previous session's run), so a
single model lands between about 0.62 and 0.69 on unseen 5-9 (raw pixels
0.633) and at 0.988-0.996 on held-out images: short of both digits targets in
every single-model run so far. The ensemble row, three times the training
budget and three times the embedding cost (384 dimensions), meets both. Losses
rank differently from run to run (triplet + cross-entropy, arcface and the
classification baseline have each come near the top); read the ranking within
about 0.05 as a tie. Contrastive loss lost on both sets in every run.
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


def train_once(
    set_name: str, method: str, recipe: Recipe, *, unlabeled: bool = False, ensemble: int = 1
) -> Run:
    """Train and measure one model with the trainer's own `train`, exporting to a temp dir."""
    from training.models import EncoderSpec
    from training.train import TrainConfig, train

    with tempfile.TemporaryDirectory(prefix="quality-") as out:
        config = TrainConfig(
            data=set_name,
            out=Path(out) / "model",
            unlabeled=unlabeled,
            holdout_classes=HOLDOUT[set_name],
            encoder=EncoderSpec(
                embedding_dim=recipe.embedding_dim, dropout=recipe.dropout, pooling=recipe.pooling
            ),
            loss=method if method in LOSSES else "multisimilarity",
            classification_baseline=method == CLASSIFICATION,
            epochs=recipe.epochs,
            steps_per_epoch=recipe.steps_per_epoch,
            lr=recipe.lr,
            weight_decay=recipe.weight_decay,
            augment=recipe.augment,
            class_transforms=recipe.class_transforms,
            early_stopping_patience=recipe.early_stopping_patience,
            seed=recipe.seed,
            ensemble=ensemble,
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


def ensemble_name(method: str, members: int) -> str:
    return f"{method}, ensemble of {members}"


def best_method(rows: Sequence[dict[str, Any]], *, single: bool = True) -> str:
    """The trained method with the highest MAP@R on unseen classes: the hard half.

    `single`: among single models, which all had the same budget.
    """
    trained = [
        r
        for r in rows
        if r["method"] not in (RAW_PIXELS, UNTRAINED) and not (single and r.get("ensemble"))
    ]
    return str(max(trained, key=lambda r: r["held_out_classes"].get("map_at_r", 0.0))["method"])


def check_targets(sets: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, met or missed, for the best single model and the best row of a set."""
    checks: list[dict[str, Any]] = []
    for (set_name, part), target in TARGETS.items():
        if set_name not in sets:
            continue
        rows = {r["method"]: r for r in sets[set_name]["rows"]}
        for name in dict.fromkeys(
            [sets[set_name]["best"], best_method(list(rows.values()), single=False)]
        ):
            best = rows[name]
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
        best = rows[best_method(entry["rows"], single=False)]
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
    ensemble: int = ENSEMBLE,
) -> dict[str, Any]:
    result: dict[str, Any] = {"recipe": asdict(recipe), "sets": {}}
    for set_name in sets:
        runs = []
        for method in methods:
            run = train_once(set_name, method, recipe.for_set(set_name))
            runs.append(run)
            print(f"{set_name} {method}: {_summary(run)}", file=sys.stderr, flush=True)
        rows = rows_of(runs)
        best = best_method(rows)
        if ensemble > 1 and runs:
            run = train_once(set_name, best, recipe.for_set(set_name), ensemble=ensemble)
            name = ensemble_name(best, ensemble)
            print(f"{set_name} {name}: {_summary(run)}", file=sys.stderr, flush=True)
            rows.insert(
                len(runs), {**_row(name, run.figures, "encoder", run), "ensemble": ensemble}
            )
        result["sets"][set_name] = {
            "description": runs[0].description if runs else "",
            "holdout_classes": HOLDOUT[set_name],
            "rows": rows,
            "best": best,
            "options": recipe.for_set(set_name).options(),
        }
    if sweep_dims and result["sets"]:
        set_name = sets[0]
        best = result["sets"][set_name]["best"]
        sweep = []
        for dim in sweep_dims:
            run = train_once(set_name, best, replace(recipe.for_set(set_name), embedding_dim=dim))
            print(f"{set_name} {best} dim {dim}: {_summary(run)}", file=sys.stderr, flush=True)
            sweep.append({**_row(best, run.figures, "encoder", run), "embedding_dim": dim})
        result["embedding_sweep"] = {"set": set_name, "method": best, "rows": sweep}
    if unlabeled:
        # Every image is its own class there already; turned copies would be more negatives.
        unlabeled_recipe = replace(recipe.for_set("digits"), class_transforms="none")
        run = train_once("digits", "supcon", unlabeled_recipe, unlabeled=True)
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
        options = f"\n\nOptions: `{entry['options']}`" if "options" in entry else ""
        parts.append(
            f"### {set_name}: {description}, last {entry['holdout_classes']} "
            f"classes unseen (best: {entry['best']}){options}\n\n{markdown_table(entry['rows'])}"
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
    parser.add_argument(
        "--ensemble",
        type=int,
        default=ENSEMBLE,
        help="members of the extra ensemble row of each set's best loss (0 or 1: none)",
    )
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
        ensemble=args.ensemble,
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
            f"(small CNN, `{recipe.options()}`; batches of 8 images from each of 10 classes; "
            "`--class-transforms auto` is `dihedral` on digits, so training sees 40 classes "
            "made from the 5 digits, and `none` on glyphs; each table names its options). "
            "Raw pixels are mean-centred and L2-normalised; the untrained encoder is the "
            "same network at its initial weights. Each run keeps the epoch with the best "
            "validation MAP@R on a tenth of the seen classes' images. MAP@R is the headline "
            "figure; run s is the whole run (training, evaluation, export) on a shared "
            "machine. A set's best method is the single model with the highest MAP@R on its "
            "unseen classes; the row after the losses is that method trained from seeds 0, 1 "
            "and 2 and exported as one encoder (`--ensemble 3`, training/ensemble.py): three "
            "times the training budget, three times the embedding cost and dimensions (its best "
            "epoch is the first member's). The "
            "embedding-size sweep uses the best single method on the first set.",
            text,
            TUNING,
            f"- machine: {result['machine']}\n- versions: {result['versions']}\n"
            f"- command: `{result['command']}` ({result['seconds']:.0f} s in all)",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())

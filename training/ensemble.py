"""Several encoders trained from different seeds, exported as one.

On classes never seen in training a single small encoder is noisy: the same
recipe from another seed moves unseen-class MAP@R on digits by ~0.05, because
each run learns its own accidental features of the seen classes. Networks from
different seeds make different mistakes, so their agreement is a better
similarity than any one of them (digits 5-9: 0.661-0.691 for three members,
0.739 for the three together; benchmarks/RESULTS.md).

Members are joined by concatenating their unit-length embeddings and
normalising once more, so the ensemble's cosine similarity is exactly the
mean of the members' cosines, and the exported encoder keeps the model
directory's contract (built-in layers only, L2-normalised output) with
`members x --embedding-dim` dimensions. Training and embedding cost grow
with the number of members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

    from training.trainer import FitResult

MAX_MEMBERS = 16


def member_seeds(seed: int, members: int) -> list[int]:
    """The seed each member trains from; the first is the run's own seed."""
    if not 1 <= members <= MAX_MEMBERS:
        raise ValueError(f"--ensemble must be between 1 and {MAX_MEMBERS}, got {members}")
    return [seed + i for i in range(members)]


def ensemble_encoder(members: Sequence[keras.Model]) -> keras.Model:
    """One encoder whose embedding is the members' embeddings side by side, re-normalised."""
    import keras

    if len(members) == 1:
        return members[0]
    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    outputs = []
    for i, member in enumerate(members):
        # Renamed so the saved model's layer names stay unique.
        member.name = f"member_{i}"
        outputs.append(member(inputs))
    joined = keras.layers.Concatenate(name="members")(outputs)
    embedding = keras.layers.UnitNormalization(name="embedding")(joined)
    return keras.Model(inputs, embedding, name=f"ensemble_of_{len(members)}")


def merged_history(fits: Sequence[FitResult]) -> dict[str, list[float]]:
    """One member's curves as they are; several, each curve prefixed by its member."""
    if len(fits) == 1:
        return fits[0].history
    return {
        f"member{i}_{key}": values
        for i, fit in enumerate(fits)
        for key, values in fit.history.items()
    }

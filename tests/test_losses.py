"""Metric losses and miners against plain NumPy references written from the papers.

Every reference below is a loop over pairs or triplets in float64, written
from the definitions in the class docstrings, so a change to the maths in
`training/` (a sign, a mask, a denominator) makes these tests fail.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.losses import (
    LOSS_NAMES,
    ArcFaceLoss,
    ContrastiveLoss,
    CrossBatchMemory,
    MultiSimilarityLoss,
    NPairsLoss,
    SupConLoss,
    TripletCrossEntropyLoss,
    TripletLoss,
    build_loss,
    loss_callbacks,
)
from training.miners import (
    CurriculumMiner,
    MiningCurriculum,
    TripletMiner,
    mine_triplets,
    pair_masks,
)

CLASSES, PER_CLASS, DIM = 4, 3, 8


def close(expected):
    return pytest.approx(expected, rel=1e-4, abs=1e-5)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_batch(seed, spread=0.9):
    """4 classes x 3 in shuffled order, loosely clustered so every mining case occurs."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(CLASSES), PER_CLASS)).astype("int32")
    centres = unit(rng.normal(size=(CLASSES, DIM)))
    emb = unit(centres[labels] + spread * rng.normal(size=(len(labels), DIM)))
    return labels, emb.astype("float32")


@pytest.fixture
def batch():
    return make_batch(0)


def plain_allowed(n):
    return ~np.eye(n, dtype=bool)


def query_ref_case(seed):
    """Queries that are part of a larger reference set, with some comparisons forbidden."""
    labels, emb = make_batch(seed)
    rng = np.random.default_rng(seed + 100)
    extra_labels, extra = make_batch(seed + 1)
    ref_labels = np.concatenate([labels, extra_labels])
    refs = np.concatenate([emb, extra])
    allowed = np.concatenate([plain_allowed(len(labels)), rng.random((12, 12)) > 0.3], axis=1)
    return labels, emb, ref_labels, refs, allowed


def groups(ql, rl, allowed, a):
    positives = [j for j in range(len(rl)) if allowed[a, j] and rl[j] == ql[a]]
    negatives = [j for j in range(len(rl)) if allowed[a, j] and rl[j] != ql[a]]
    return positives, negatives


def sims(q, r):
    return np.asarray(q, np.float64) @ np.asarray(r, np.float64).T


# ---------------------------------------------------------------- references


def np_contrastive(ql, q, rl, r, allowed, margin=0.5):
    s = sims(q, r)
    pos, neg = [], []
    for a in range(len(ql)):
        for j in range(len(rl)):
            if not allowed[a, j]:
                continue
            if ql[a] == rl[j]:
                pos.append(1.0 - s[a, j])
            else:
                neg.append(max(0.0, s[a, j] - margin))
    return (np.mean(pos) if pos else 0.0) + (np.mean(neg) if neg else 0.0)


def np_triplets(ql, rl, s, allowed, strategy, margin=0.2):
    """Brute force: for every (anchor, positive) scan every negative."""
    chosen = set()
    for a in range(len(ql)):
        positives, negatives = groups(ql, rl, allowed, a)
        if not positives or not negatives:
            continue
        if strategy == "hard":
            p = min(positives, key=lambda j: s[a, j])
            n = max(negatives, key=lambda j: s[a, j])
            chosen.add((a, p, n))
            continue
        least_similar = min(negatives, key=lambda j: s[a, j])
        for p in positives:
            if strategy == "semi-hard":
                ok = [n for n in negatives if s[a, n] < s[a, p]]
                n = max(ok, key=lambda j: s[a, j]) if ok else least_similar
            else:
                ok = [n for n in negatives if s[a, n] > s[a, p] - margin]
                n = min(ok, key=lambda j: s[a, j]) if ok else least_similar
            chosen.add((a, p, n))
    return chosen


def np_triplet(ql, q, rl, r, allowed, margin=0.2, strategy="semi-hard"):
    s = sims(q, r)
    losses = [
        max(0.0, s[a, n] - s[a, p] + margin)
        for a, p, n in np_triplets(ql, rl, s, allowed, strategy, margin)
    ]
    return np.mean(losses) if losses else 0.0


def np_npairs(ql, q, rl, r, allowed, temperature=0.1):
    s = sims(q, r) / temperature
    losses = []
    for a in range(len(ql)):
        positives, negatives = groups(ql, rl, allowed, a)
        for p in positives:
            denominator = np.exp(s[a, p]) + sum(np.exp(s[a, n]) for n in negatives)
            losses.append(-np.log(np.exp(s[a, p]) / denominator))
    return np.mean(losses) if losses else 0.0


def np_multisimilarity(ql, q, rl, r, allowed, alpha=2.0, beta=50.0, base=0.5, eps=0.1):
    s = sims(q, r)
    total = 0.0
    for a in range(len(ql)):
        positives, negatives = groups(ql, rl, allowed, a)
        if not positives or not negatives:
            continue
        pos_s = np.array([s[a, j] for j in positives])
        neg_s = np.array([s[a, j] for j in negatives])
        kept_neg = neg_s[neg_s + eps > pos_s.min()]
        kept_pos = pos_s[pos_s - eps < neg_s.max()]
        if len(kept_neg) == 0 or len(kept_pos) == 0:
            continue
        total += np.log(1 + np.sum(np.exp(-alpha * (kept_pos - base)))) / alpha
        total += np.log(1 + np.sum(np.exp(beta * (kept_neg - base)))) / beta
    return total / len(ql)


def np_supcon(ql, q, rl, r, allowed, temperature=0.1):
    s = sims(q, r) / temperature
    per_anchor = []
    for a in range(len(ql)):
        positives, _ = groups(ql, rl, allowed, a)
        if not positives:
            continue
        denominator = sum(np.exp(s[a, k]) for k in range(len(rl)) if allowed[a, k])
        per_anchor.append(-np.mean([np.log(np.exp(s[a, p]) / denominator) for p in positives]))
    return np.mean(per_anchor) if per_anchor else 0.0


def np_cross_entropy(labels, logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean([log_softmax[i, y] for i, y in enumerate(labels)])


def np_arcface(labels, emb, proxies, scale, margin):
    w = unit(np.asarray(proxies, np.float64))
    cos = np.clip(np.asarray(emb, np.float64) @ w.T, -1, 1)
    logits = cos.copy()
    for i, y in enumerate(labels):
        angle = math.acos(cos[i, y])
        if angle + margin <= math.pi:
            logits[i, y] = math.cos(angle + margin)
        else:
            logits[i, y] = cos[i, y] - margin * math.sin(margin)
    return np_cross_entropy(labels, scale * logits)


PAIR_LOSSES = {
    "contrastive": (ContrastiveLoss, np_contrastive),
    "triplet": (TripletLoss, np_triplet),
    "npairs": (NPairsLoss, np_npairs),
    "multisimilarity": (MultiSimilarityLoss, np_multisimilarity),
    "supcon": (SupConLoss, np_supcon),
}


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("name", list(PAIR_LOSSES))
def test_pair_loss_matches_reference_on_a_batch(name, batch):
    loss_class, reference = PAIR_LOSSES[name]
    labels, emb = batch
    expected = reference(labels, emb, labels, emb, plain_allowed(len(labels)))
    assert float(loss_class()(labels, emb)) == close(expected)
    assert float(loss_class()(labels[:, None], emb)) == close(expected)


@pytest.mark.parametrize("name", list(PAIR_LOSSES))
def test_pair_loss_matches_reference_on_queries_against_references(name):
    loss_class, reference = PAIR_LOSSES[name]
    ql, q, rl, r, allowed = query_ref_case(3)
    got = loss_class().compute(ql, q, rl, r, allowed)
    assert float(got) == close(reference(ql, q, rl, r, allowed))


@pytest.mark.parametrize("strategy", ["easy", "semi-hard", "hard"])
def test_triplet_loss_mining_strategies_match_reference(strategy, batch):
    labels, emb = batch
    expected = np_triplet(
        labels, emb, labels, emb, plain_allowed(12), margin=0.3, strategy=strategy
    )
    got = TripletLoss(margin=0.3, mining=strategy)(labels, emb)
    assert float(got) == close(expected)


def test_non_default_hyperparameters_reach_the_maths(batch):
    labels, emb = batch
    allowed = plain_allowed(12)
    ms = MultiSimilarityLoss(alpha=3.0, beta=40.0, base=0.4, epsilon=0.2)(labels, emb)
    ms_expected = np_multisimilarity(labels, emb, labels, emb, allowed, 3.0, 40.0, 0.4, 0.2)
    assert float(ms) == close(ms_expected)
    assert float(ContrastiveLoss(0.1)(labels, emb)) == close(
        np_contrastive(labels, emb, labels, emb, allowed, margin=0.1)
    )
    assert float(SupConLoss(0.5)(labels, emb)) == close(
        np_supcon(labels, emb, labels, emb, allowed, temperature=0.5)
    )


def test_multisimilarity_mining_removes_pairs_in_this_batch(batch):
    labels, emb = batch
    allowed = plain_allowed(12)
    mined = np_multisimilarity(labels, emb, labels, emb, allowed)
    unmined = np_multisimilarity(labels, emb, labels, emb, allowed, eps=10.0)
    assert abs(mined - unmined) > 1e-3
    assert float(MultiSimilarityLoss()(labels, emb)) == close(mined)


def test_multisimilarity_counts_anchors_left_without_pairs_in_the_mean():
    labels, emb = make_batch(0)
    rng = np.random.default_rng(8)
    centre = unit(rng.normal(size=(1, DIM)))
    tight = labels == 0
    emb[tight] = unit(centre + 0.01 * rng.normal(size=(int(tight.sum()), DIM)))
    s = sims(emb, emb)
    dropped = [
        a
        for a in np.flatnonzero(tight)
        if max(s[a, labels != 0]) + 0.1 <= min(s[a, tight & (np.arange(12) != a)])
    ]
    assert dropped
    expected = np_multisimilarity(labels, emb, labels, emb, plain_allowed(12))
    assert expected > 0
    assert float(MultiSimilarityLoss()(labels, emb)) == close(expected)


def test_npairs_is_softmax_over_the_anchor_positive_matrix():
    rng = np.random.default_rng(5)
    anchors = unit(rng.normal(size=(6, DIM))).astype("float32")
    positives = unit(anchors + 0.5 * rng.normal(size=(6, DIM))).astype("float32")
    labels = np.arange(6, dtype="int32")
    logits = sims(anchors, positives) / 0.2
    expected = np_cross_entropy(labels, logits)
    got = NPairsLoss(0.2).compute(labels, anchors, labels, positives, np.ones((6, 6), bool))
    assert float(got) == close(expected)


def test_arcface_matches_reference_including_the_wrapped_angle(batch):
    labels, emb = batch
    loss = ArcFaceLoss(CLASSES, DIM, scale=16.0, margin=0.5)
    proxies = np.random.default_rng(1).normal(size=(CLASSES, DIM)).astype("float32")
    proxies[labels[0]] = -emb[0]
    loss.proxies.assign(proxies)
    assert float(loss(labels, emb)) == close(np_arcface(labels, emb, proxies, 16.0, 0.5))


def test_triplet_cross_entropy_adds_the_head_cross_entropy(batch):
    labels, emb = batch
    loss = TripletCrossEntropyLoss(CLASSES, DIM, ce_weight=0.5)
    kernel, bias = (np.asarray(v) for v in loss.head.weights)
    bias = bias + np.arange(CLASSES)
    loss.head.bias.assign(bias)
    logits = np.asarray(emb, np.float64) @ kernel + bias
    expected = np_triplet(labels, emb, labels, emb, plain_allowed(12)) + 0.5 * np_cross_entropy(
        labels, logits
    )
    assert float(loss(labels, emb)) == close(expected)


def test_batch_without_positives_gives_finite_losses_and_gradients():
    labels = np.arange(6, dtype="int32")
    table = tf.Variable(np.random.default_rng(2).normal(size=(6, DIM)).astype("float32"))
    for name in LOSS_NAMES:
        loss_layer = build_loss(name, num_classes=6, embedding_dim=DIM)
        with tf.GradientTape() as tape:
            value = loss_layer(labels, tf.math.l2_normalize(table, axis=1))
        grad = tape.gradient(value, table)
        assert np.isfinite(float(value)), name
        assert grad is None or np.all(np.isfinite(grad.numpy())), name


# ---------------------------------------------------------------- miners


def triplet_set(triplets):
    anchor_positive = np.asarray(triplets.anchor_positive)
    negative = np.asarray(triplets.negative)
    return {(a, p, int(negative[a, p])) for a, p in zip(*np.nonzero(anchor_positive), strict=True)}


@pytest.mark.parametrize("strategy", ["easy", "semi-hard", "hard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miner_picks_the_brute_force_triplets(strategy, seed):
    ql, q, rl, r, allowed = query_ref_case(seed)
    ql[ql == 3] = 7
    ql[np.flatnonzero(ql == 7)[0]] = 9
    s = sims(q, r).astype("float32")
    positive, negative = pair_masks(ql, rl, allowed)
    got = triplet_set(TripletMiner(strategy, margin=0.3)(s, positive, negative))
    expected = np_triplets(ql, rl, s, allowed, strategy, margin=0.3)
    assert got == expected
    assert got


@pytest.mark.parametrize("strategy", ["easy", "semi-hard"])
def test_miner_tests_exercise_the_fallback_negative(strategy):
    fallbacks = 0
    for seed in (0, 1, 2):
        ql, q, rl, r, allowed = query_ref_case(seed)
        s = sims(q, r)
        for a, p, n in np_triplets(ql, rl, s, allowed, strategy, 0.3):
            if strategy == "semi-hard":
                fallbacks += s[a, n] > s[a, p]
            else:
                fallbacks += s[a, n] <= s[a, p] - 0.3
    assert fallbacks > 0


def test_curriculum_switches_from_easy_to_semi_hard_inside_a_traced_step(batch):
    labels, emb = batch
    s = sims(emb, emb).astype("float32")
    positive, negative = pair_masks(labels, labels, plain_allowed(12))
    miner = CurriculumMiner(margin=0.2)
    mine = tf.function(lambda x: miner(x, positive, negative))
    easy = np_triplets(labels, labels, s, plain_allowed(12), "easy", 0.2)
    semi_hard = np_triplets(labels, labels, s, plain_allowed(12), "semi-hard", 0.2)
    assert easy != semi_hard
    callback = MiningCurriculum([miner], epochs=2)
    callback.on_epoch_begin(1)
    assert triplet_set(mine(s)) == easy
    callback.on_epoch_begin(2)
    assert triplet_set(mine(s)) == semi_hard
    assert mine.experimental_get_tracing_count() == 1


def test_loss_callbacks_find_the_curriculum_only_where_there_is_one():
    for name in ("triplet", "triplet_ce"):
        for xbm_size in (0, 24):
            loss = build_loss(
                name, num_classes=4, embedding_dim=DIM, mining="curriculum", xbm_size=xbm_size
            )
            (callback,) = loss_callbacks(loss, curriculum_epochs=3)
            (miner,) = loss.curriculum_miners()
            callback.on_epoch_begin(3)
            assert int(miner.stage) == 1
    assert loss_callbacks(build_loss("triplet", num_classes=4, embedding_dim=DIM), 3) == []
    assert loss_callbacks(build_loss("supcon", num_classes=4, embedding_dim=DIM), 3) == []


def test_mine_triplets_rejects_unknown_strategy(batch):
    labels, emb = batch
    masks = pair_masks(labels, labels, plain_allowed(12))
    with pytest.raises(ValueError, match="mining"):
        mine_triplets("medium", sims(emb, emb), masks, 0.2)


# ---------------------------------------------------------------- cross-batch memory


def test_memory_fills_then_rolls_over_the_oldest():
    xbm = CrossBatchMemory(ContrastiveLoss(), size=5, embedding_dim=2)
    rows = np.arange(30, dtype="float32").reshape(15, 2)
    xbm(np.arange(3), rows[:3])
    assert int(xbm.filled) == 3
    np.testing.assert_array_equal(np.asarray(xbm.memory)[:3], rows[:3])
    xbm(np.arange(3, 6), rows[3:6])
    assert int(xbm.filled) == 5
    np.testing.assert_array_equal(np.asarray(xbm.memory_labels), [5, 1, 2, 3, 4])
    np.testing.assert_array_equal(np.asarray(xbm.memory), rows[[5, 1, 2, 3, 4]])
    xbm(np.arange(6, 13), rows[6:13])
    assert sorted(np.asarray(xbm.memory_labels).tolist()) == [8, 9, 10, 11, 12]


@pytest.mark.parametrize("name", list(PAIR_LOSSES))
def test_loss_with_memory_equals_reference_over_batch_and_memory(name):
    _, reference = PAIR_LOSSES[name]
    xbm = build_loss(name, num_classes=CLASSES, embedding_dim=DIM, xbm_size=16)
    step = tf.function(lambda y, x: xbm(y, x))
    batches = [make_batch(seed) for seed in (10, 11, 12)]
    seen_labels, seen = np.zeros(0, "int32"), np.zeros((0, DIM), "float32")
    for labels, emb in batches:
        ref_labels = np.concatenate([labels, seen_labels[-16:]])
        refs = np.concatenate([emb, seen[-16:]])
        allowed = np.concatenate([plain_allowed(12), np.ones((12, len(refs) - 12), bool)], 1)
        expected = reference(labels, emb, ref_labels, refs, allowed)
        assert float(step(labels, emb)) == close(expected)
        seen_labels = np.concatenate([seen_labels, labels])
        seen = np.concatenate([seen, emb])
    memory_rows = {tuple(row) for row in np.asarray(xbm.memory).round(5)}
    assert memory_rows == {tuple(row) for row in seen[-16:].round(5)}


def test_memory_with_nothing_in_it_is_the_plain_loss(batch):
    labels, emb = batch
    xbm = build_loss("npairs", num_classes=CLASSES, embedding_dim=DIM, xbm_size=64)
    plain = build_loss("npairs", num_classes=CLASSES, embedding_dim=DIM)
    assert float(xbm(labels, emb)) == close(float(plain(labels, emb)))


# ---------------------------------------------------------------- training behaviour


def cosine_means(labels, table):
    s = sims(unit(table), unit(table))
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return s[same & off_diagonal].mean(), s[~same].mean()


STEP_CASES = [
    ("contrastive", "semi-hard"),
    ("triplet", "easy"),
    ("triplet", "semi-hard"),
    ("triplet", "hard"),
    ("triplet", "curriculum"),
    ("npairs", "semi-hard"),
    ("multisimilarity", "semi-hard"),
    ("supcon", "semi-hard"),
    ("triplet_ce", "semi-hard"),
    ("arcface", "semi-hard"),
]


@pytest.mark.parametrize(("name", "mining"), STEP_CASES)
def test_one_sgd_step_pulls_positives_together_and_pushes_negatives_apart(name, mining):
    rng = np.random.default_rng(4)
    labels = rng.permutation(np.repeat(np.arange(CLASSES), PER_CLASS)).astype("int32")
    table = tf.Variable(rng.normal(size=(12, DIM)).astype("float32"))
    loss_layer = build_loss(name, num_classes=CLASSES, embedding_dim=DIM, mining=mining)
    variables = [table, *loss_layer.trainable_variables]

    def loss_value():
        return loss_layer(labels, tf.math.l2_normalize(table, axis=1))

    before = cosine_means(labels, table.numpy())
    with tf.GradientTape() as tape:
        loss_before = loss_value()
    for variable, grad in zip(variables, tape.gradient(loss_before, variables), strict=True):
        variable.assign_sub(0.02 * grad)
    after = cosine_means(labels, table.numpy())
    if name == "arcface":
        assert float(loss_value()) < float(loss_before)
    else:
        assert after[0] > before[0], "positives should become more similar"
        assert after[1] < before[1], "negatives should become less similar"


def test_traced_train_step_matches_eager_for_every_loss(batch):
    labels, emb = batch
    for name in LOSS_NAMES:
        loss_layer = build_loss(name, num_classes=CLASSES, embedding_dim=DIM)
        eager = float(loss_layer(labels, emb))

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None, DIM], tf.float32),
            ]
        )
        def train_step(y, x, loss_layer=loss_layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss_layer(y, x)
            return value, tape.gradient(value, [x, *loss_layer.trainable_variables])

        value, grads = train_step(labels, emb)
        assert float(value) == close(eager), name
        assert all(np.all(np.isfinite(g.numpy())) for g in grads), name


def test_stateless_loss_works_in_model_compile():
    labels, x = make_batch(6, spread=2.0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((DIM,)), keras.layers.Dense(DIM), keras.layers.UnitNormalization()]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=SupConLoss(), jit_compile=False)
    initial = model.predict(x, verbose=0)
    history = model.fit(x, labels, batch_size=12, epochs=5, shuffle=False, verbose=0)
    first = np_supcon(labels, initial, labels, initial, plain_allowed(12))
    assert history.history["loss"][0] == close(first)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_stateless_losses_round_trip_through_their_config():
    for loss in (
        ContrastiveLoss(0.3),
        TripletLoss(0.1, "hard"),
        NPairsLoss(0.05),
        MultiSimilarityLoss(1.0, 20.0, 0.6, 0.05),
        SupConLoss(0.2),
    ):
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(copy) is type(loss)
        assert copy.get_config() == loss.get_config()


# ---------------------------------------------------------------- factory


def test_build_loss_uses_paper_defaults_and_maps_options():
    def build(name, **options):
        return build_loss(name, num_classes=CLASSES, embedding_dim=DIM, **options)

    assert build("contrastive").margin == 0.5
    assert build("triplet").margin == 0.2
    assert build("triplet").mining == "semi-hard"
    assert build("npairs").temperature == 0.1
    assert build("supcon").temperature == 0.1
    ms = build("multisimilarity", margin=0.05)
    assert (ms.alpha, ms.beta, ms.base, ms.epsilon) == (2.0, 50.0, 0.5, 0.05)
    arcface = build("arcface")
    assert (arcface.scale, arcface.margin) == (30.0, 0.5)
    assert build("arcface", temperature=0.0625).scale == close(16.0)
    assert build("triplet", mining="hard", margin=0.3).miner.strategy == "hard"
    assert len(build("triplet_ce").trainable_variables) == 2
    assert len(build("arcface").trainable_variables) == 1
    wrapped = build("supcon", xbm_size=32, temperature=0.2)
    assert isinstance(wrapped, CrossBatchMemory)
    assert wrapped.loss.temperature == 0.2
    assert isinstance(build("triplet_ce", xbm_size=8).metric_loss, CrossBatchMemory)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("centroid", {}, "unknown loss"),
        ("triplet", {"mining": "medium"}, "unknown mining"),
        ("npairs", {"margin": 0.1}, "no margin"),
        ("triplet", {"temperature": 0.1}, "no temperature"),
        ("supcon", {"temperature": 0.0}, "> 0"),
        ("arcface", {"xbm_size": 16}, "xbm_size"),
        ("supcon", {"xbm_size": -1}, "xbm_size"),
    ],
)
def test_build_loss_rejects_options_it_cannot_honour(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_loss(name, num_classes=CLASSES, embedding_dim=DIM, **options)

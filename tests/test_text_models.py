"""Comment models: one contract suite over every Moderator / SentimentModel implementation, real training
on a small subset, the `score` CLI round trip, and the GPU path. Real torch models throughout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from typer.testing import CliRunner

from models.text.base import (
    CommentScore,
    Moderator,
    SentimentModel,
    decide,
    detect_lang,
    load_comment_models,
    resolve_langs,
)
from models.text.comments import SHIPPED_DIR, CommentModels
from models.text.config import CATEGORIES, ModerationSettings, Thresholds
from models.text.data import default_data_dir
from models.text.training import TrainOptions, headline, save, train

DATA = default_data_dir()
SENTIMENT_KEYS = ("negative", "neutral", "positive")
HARD_TEXTS = [
    "",
    "x" * 1_000_000,
    "This video 太好看了!! lol 😂😂",
    "🔥🔥🔥",
    "you are a complete idiot",
    "这个视频太好看了，谢谢分享",
    "   \n\t ",
    "\x00null byte",
]

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory):
    """The real training code on 300 rows per dataset, 1 epoch, saved like the shipped weights."""
    if not DATA.exists():
        pytest.skip(f"training data not present at {DATA}")
    result = train(DATA, TrainOptions(epochs=1, limit_per_dataset=300, threads=1))
    out = tmp_path_factory.mktemp("weights")
    save(result, out)
    return result, out


@pytest.fixture(scope="module")
def shipped() -> CommentModels:
    return load_comment_models(ModerationSettings(device="cpu"))


@pytest.fixture(scope="module")
def small(small_run) -> CommentModels:
    return load_comment_models(ModerationSettings(model_dir=str(small_run[1]), device="cpu"))


# Every implementation of each protocol: (protocol, which weights, how to get it from CommentModels).
IMPLEMENTATIONS = [
    pytest.param((Moderator, "shipped", lambda m: m.moderator), id="moderator-shipped"),
    pytest.param((Moderator, "small", lambda m: m.moderator), id="moderator-small", marks=pytest.mark.slow),
    pytest.param((SentimentModel, "shipped", lambda m: m.sentiment), id="sentiment-shipped"),
    pytest.param((SentimentModel, "small", lambda m: m.sentiment), id="sentiment-small", marks=pytest.mark.slow),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest):
    protocol, weights, get = request.param
    model = get(request.getfixturevalue(weights))
    keys = CATEGORIES if protocol is Moderator else SENTIMENT_KEYS
    return protocol, model, keys


def test_contract_shapes_ranges_and_odd_texts(impl) -> None:
    protocol, model, keys = impl
    assert isinstance(model, protocol)
    assert isinstance(model.model_version, str) and model.model_version
    out = model.score_batch(HARD_TEXTS)
    assert len(out) == len(HARD_TEXTS)
    for row in out:
        assert tuple(row) == tuple(keys)
        assert all(isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in row.values())
        if protocol is SentimentModel:
            assert sum(row.values()) == pytest.approx(1.0, abs=1e-5)
    assert model.score_batch([]) == []


def test_contract_deterministic_and_batch_equals_single(impl) -> None:
    _, model, _ = impl
    langs = ["en", None, None, "en", "en", "zh", None, "zh"]
    batch = model.score_batch(HARD_TEXTS, langs)
    assert model.score_batch(HARD_TEXTS, langs) == batch
    for text, lang, row in zip(HARD_TEXTS, langs, batch):
        single = model.score_batch([text], [lang])[0]
        assert single == pytest.approx(row, abs=1e-5)


def test_contract_langs_optional_and_checked(impl) -> None:
    _, model, _ = impl
    texts = ["nice one", "好看"]
    assert model.score_batch(texts) == model.score_batch(texts, ["en", "zh"])
    assert model.score_batch(texts, None) == model.score_batch(texts, [None, None])
    with pytest.raises(ValueError):
        model.score_batch(texts, ["en"])


def test_detect_lang() -> None:
    assert detect_lang("这个视频太好看了") == "zh"
    assert detect_lang("这个视频 so good 哈哈 lol") == "zh"
    assert detect_lang("what a great video") == "en"
    assert detect_lang("") == "en"
    assert detect_lang("😂😂 123") == "en"
    assert detect_lang("café naïve ✨") == "en"  # non-ASCII letters that are not ideographs
    assert detect_lang("a" * 40 + "中文") == "en" and detect_lang("a" * 8 + "中文") == "zh"  # the 1/5 bar
    assert detect_lang("\U00020000\U0002000b ok") == "zh"  # extension B ideographs count
    assert resolve_langs(["hello", "你好"], ["zh", "fr"]) == ["zh", "zh"]


def test_decide_uses_configured_thresholds() -> None:
    th = {c: Thresholds() for c in CATEGORIES} | {"hate": Thresholds(review=0.3, block=0.8)}
    low = {c: 0.1 for c in CATEGORIES}
    assert decide(low, th) == ("allow", [])
    assert decide(low | {"hate": 0.35}, th) == ("review", ["hate>=0.30"])
    assert decide(low | {"hate": 0.85, "spam": 0.95}, th) == ("block", ["hate>=0.80", "spam>=0.90"])
    assert decide(low | {"hate": 0.85, "spam": 0.95}, th, abstain=["spam"]) == ("block", ["hate>=0.80"])
    assert decide(low | {"spam": 0.95}, th, abstain=["spam"]) == ("allow", [])


def test_score_shares_one_pass_and_caps_text(shipped: CommentModels) -> None:
    settings = ModerationSettings(device="cpu", max_text_chars=20)
    models = load_comment_models(settings)
    long_text = "you are an idiot " * 100
    res = models.score([long_text, "这个视频太好看了"])
    assert all(isinstance(r, CommentScore) for r in res)
    assert res[0].lang == "en" and res[1].lang == "zh"
    assert res[0].action in ("allow", "review", "block")
    assert res[0].scores == pytest.approx(models.score([long_text[:20]])[0].scores, abs=1e-6)
    assert res[0].scores == pytest.approx(shipped.moderator.score_batch([long_text[:20]])[0], abs=1e-5)
    assert sum(res[1].sentiment.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_training_learns_on_small_subset(small_run) -> None:
    result, out = small_run
    assert (out / "comment_net.pt").exists()
    assert result.n_train["sst2"] == 270 and result.n_val["sst2"] == 30
    # Easy lines: spam and the product-review sentiment sets are near-separable by a few n-grams.
    assert result.report["youtube_spam"]["spam"]["auc"] > 0.7
    easy = [result.report[d]["sentiment"]["accuracy"] for d in ("online_shopping_10_cats", "waimai_10k")]
    assert np.mean(easy) > 0.6
    assert headline(result.report) > 0.55


@pytest.mark.slow
def test_training_refits_the_experts_linear_heads_on_train_and_validation_after_choosing(small_run) -> None:
    """Issue #17: once the validation split made its choices, every dataset expert's linear head is fitted again
    on the training and validation rows (as the floor is fitted on both); the validation report is the one
    taken before, the deep view, blends, toxic head and routers are kept, and the checkpoint says so."""
    refit, out = small_run
    kept = train(DATA, TrainOptions(epochs=1, limit_per_dataset=300, threads=1, refit_on_validation=False))
    assert kept.n_refit == {} and kept.models.net.config.linear_fit == "train"
    assert refit.n_refit == {ds: n + refit.n_val[ds] for ds, n in refit.n_train.items()}
    assert refit.report == kept.report and refit.linear_c == kept.linear_c
    a, b = refit.models.net.state_dict(), kept.models.net.state_dict()
    assert {k for k in a if not torch.equal(a[k], b[k])} == {"linear.weight", "linear_bias", "static_linear"}
    lay = refit.models.net.layout
    experts = [c for c in range(lay.domain_start) if c != lay.toxic_col]
    others = [lay.toxic_col, *range(lay.domain_start, lay.n_linear)]
    weight = (a["linear.weight"] - b["linear.weight"]).abs().sum(0)
    assert (weight[experts] > 0).all() and (weight[others] == 0).all()
    assert refit.models.model_version != kept.models.model_version
    loaded = CommentModels.load(ModerationSettings(model_dir=str(out), device="cpu"))
    assert loaded.net.config.linear_fit == "train+validation"


@pytest.mark.slow
def test_training_can_train_the_deep_view_again_on_train_and_validation_and_says_so(tmp_path: Path) -> None:
    """TrainOptions.refit_deep_on_validation (probed, not shipped: README; one deep view only): the same choices
    and validation report, only the deep view's weights differ from the linear-only refit, and the checkpoint,
    the model card and `eval models` say the validation rows were in its fit."""
    from models.text import model_card
    from models.text.network import DEEP_MODULES

    linear_only = train(DATA, TrainOptions(epochs=1, limit_per_dataset=300, threads=1, members=1))
    deep = train(DATA, TrainOptions(epochs=1, limit_per_dataset=300, threads=1, members=1, refit_deep_on_validation=True))
    assert deep.report == linear_only.report and deep.linear_c == linear_only.linear_c
    a, b = deep.models.net.state_dict(), linear_only.models.net.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and {k.split(".")[0] for k in changed} <= set(DEEP_MODULES)
    save(deep, tmp_path)
    loaded = CommentModels.load(ModerationSettings(model_dir=str(tmp_path), device="cpu"))
    assert loaded.net.config.deep_fit == "train+validation" and linear_only.models.net.config.deep_fit == "train"
    card = model_card.render(deep, TrainOptions(epochs=1), None, {"threads": 1, "batch_256_per_s": 1.0, "batch_1_per_s": 1.0})
    assert "the deep view was trained again from its initial weights" in card
    assert "before the refit of the linear experts and the deep view on these rows" in card
    from models.text.evaluation import evaluate

    flags = evaluate(loaded, DATA, with_baseline=False)
    assert flags["validation_in_deep_fit"] and flags["validation_in_linear_fit"] and flags["members"] == 1


def test_training_the_deep_view_again_from_its_start_repeats_the_same_epochs() -> None:
    """Issue #17: the deep view's refit on train + validation restarts from the weights and random state it
    had before its first epoch; on the same rows and epochs it reproduces those epochs exactly (so the refit
    differs from the chosen epoch only by the rows it is given), and it marks the net's config."""
    from models.text.data import load_splits
    from models.text.features import Featurizer
    from models.text.network import CommentNet, NetConfig
    from models.text.training import DeepStart, _deep_epochs, _FeatureStore, _Targets, refit_deep

    if not DATA.exists():
        pytest.skip(f"training data not present at {DATA}")
    examples = load_splits(DATA, 40)[0]
    opts = TrainOptions(batch_size=32)
    torch.manual_seed(opts.seed)
    net = CommentNet(NetConfig())
    store = _FeatureStore(Featurizer(net.config.features), examples, 5000)
    targets = _Targets(examples, net.layout)
    start = DeepStart.of(net)
    states = []
    for _ in _deep_epochs(net, store, targets, examples, opts, np.random.default_rng(opts.seed), 2):
        states.append({k: v.clone() for k, v in net.state_dict().items()})
    assert any(not torch.equal(states[0][k], w) for k, w in start.weights.items())
    for epochs in (1, 2):
        refit_deep(net, start, store, targets, examples, opts, epochs)
        again = net.state_dict()
        assert all(torch.equal(again[k], v) for k, v in states[epochs - 1].items()), epochs
    assert net.config.deep_fit == "train+validation"
    refit_deep(net, start, store, targets, examples[: len(examples) // 2], opts, 2)
    assert not torch.equal(net.state_dict()["heads.weight"], states[1]["heads.weight"])
    with pytest.raises(ValueError, match="needs refit_on_validation"):
        train(DATA, TrainOptions(refit_on_validation=False, refit_deep_on_validation=True))
    for refused in (TrainOptions(members=0), TrainOptions(members=2, refit_deep_on_validation=True)):
        with pytest.raises(ValueError, match="one deep view only"):
            train(DATA, refused)


def _random_member(seed: int, base=None):
    """A CommentNet with random deep weights, blends and routing (over `base`'s linear view when given), fp16-
    rounded as a checkpoint holds it."""
    from models.text.network import CommentNet, NetConfig, share_views
    from models.text.training import _round_to_fp16

    torch.manual_seed(seed)
    net = CommentNet(NetConfig())
    if base is None:
        net.linear.weight.data.normal_(0, 0.5)
        net.prior_logit.normal_()
    else:
        share_views(net, base)
    net.blend.uniform_()
    net.route_mix.uniform_()
    net.route_bias.normal_()
    _round_to_fp16(net)
    return net


def test_an_ensemble_scores_the_mean_of_its_members_and_its_checkpoint_keeps_them(tmp_path: Path) -> None:
    """Issue #17: members share one featurization and linear view and differ in the deep view, blends and
    routing; the ensemble's scores are the mean of what each member alone scores, one member scores exactly as
    the network alone, and a checkpoint stores the further members as what they own and loads them sharing
    the linear view again, with a model version of its own."""
    from models.text.comments import WEIGHTS_FILE, save_checkpoint
    from models.text.network import MEMBER_MODULES, ensemble_outputs, member_state
    from models.text.training import model_version_of

    base = _random_member(1)
    others = [_random_member(2, base), _random_member(3, base)]
    assert all(m.linear is base.linear and m.idf is base.idf and m.prior_logit is base.prior_logit for m in others)
    texts = ["you are an idiot", "great video!", "垃圾视频，滚", "I love this song", "这个视频太好看了", ""]
    ensemble = CommentModels(base, "v", members=others)
    alone = [CommentModels(m, "v") for m in (base, *others)]
    scores, sentiment, _ = ensemble.predict(texts)
    each = [m.predict(texts) for m in alone]
    assert np.allclose(scores, np.mean([e[0] for e in each], 0), atol=1e-6)
    assert np.allclose(sentiment, np.mean([e[1] for e in each], 0), atol=1e-6)
    assert np.allclose(sentiment.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(each[0][0], each[1][0])  # the members differ, so the mean is not one of them
    inputs = alone[0].inputs(texts, ["en", "en", "zh", "en", "zh", "en"])
    is_zh = torch.tensor([False, False, True, False, True, False])
    with torch.inference_mode():
        one = ensemble_outputs([base], is_zh, *inputs)
        direct = base.combine(base(*inputs), is_zh)
    assert all(torch.equal(a, b) for a, b in zip(one, direct))

    assert set(member_state(others[0])) == {k for k in base.state_dict() if k.split(".")[0] in MEMBER_MODULES}
    save_checkpoint(base, tmp_path / WEIGHTS_FILE, model_version_of(base, others), others)
    loaded = CommentModels.load(ModerationSettings(model_dir=str(tmp_path), device="cpu"))
    assert len(loaded.members) == 3 and all(m.linear is loaded.net.linear for m in loaded.members)
    assert all(set(m.state_dict()) == set(loaded.net.state_dict()) for m in loaded.members)  # buffers registered
    again = loaded.predict(texts)
    assert np.array_equal(again[0], scores) and np.array_equal(again[1], sentiment)
    assert len({model_version_of(base), model_version_of(base, others[:1]), model_version_of(base, others)}) == 3
    save_checkpoint(base, tmp_path / WEIGHTS_FILE, "one")
    assert "members" not in torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    assert len(CommentModels.load(ModerationSettings(model_dir=str(tmp_path), device="cpu")).members) == 1


@pytest.mark.slow
def test_each_member_is_the_deep_view_a_training_with_its_seed_gives(small_run) -> None:
    """The shipped recipe trains TrainOptions.members deep views from seeds seed, seed + 1, ...: member k is
    exactly what a one-member training with seed + k gives (so the ensemble is the mean of those trainings,
    as the out-of-distribution probe averaged them), and the model card says how they were chosen."""
    from models.text import model_card
    from models.text.network import member_state

    result, _ = small_run
    opts = TrainOptions(epochs=1, limit_per_dataset=300, threads=1)
    assert [m["seed"] for m in result.members] == [opts.seed + k for k in range(opts.members)]
    assert len(result.models.members) == opts.members == 3
    third = train(DATA, TrainOptions(epochs=1, limit_per_dataset=300, threads=1, members=1, seed=opts.seed + 2))
    assert third.members == [] and len(third.models.members) == 1
    a, b = member_state(third.models.net), member_state(result.models.members[2])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert result.members[2]["best_epoch"] == third.best_epoch
    assert torch.equal(third.models.net.linear.weight, result.models.net.linear.weight)
    card = model_card.render(result, opts, None, {"threads": 1, "batch_256_per_s": 1.0, "batch_1_per_s": 1.0})
    assert f"3 such deep views (members) share the features and the linear view, trained from seeds {opts.seed}, " in card


@pytest.mark.slow
def test_score_cli_round_trip(tmp_path: Path, small_run) -> None:
    from reelstream.cli import app

    records = [
        {"id": "a", "text": "you are an idiot", "lang": "en"},
        {"id": 2, "text": "这个视频太好看了"},
        {"id": "c", "text": "", "lang": None},
        {"id": "d", "text": "subscribe to my channel http://spam.example 😂"},
    ]
    inp, outp = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n\n")
    runner = CliRunner()
    res = runner.invoke(
        app, ["score", "--input", str(inp), "--output", str(outp), "--batch-size", "3", "--model-dir", str(small_run[1])]
    )
    assert res.exit_code == 0, res.output
    lines = [orjson.loads(x) for x in outp.read_bytes().splitlines()]
    assert [x["id"] for x in lines] == ["a", 2, "c", "d"]
    assert "spam" in lines[1]["abstained"] and "sexism" in lines[0]["abstained"]
    for x in lines:
        assert set(x) == {"id", "scores", "sentiment", "action", "reasons", "abstained", "model_version"}
        assert tuple(x["scores"]) == CATEGORIES and tuple(x["sentiment"]) == SENTIMENT_KEYS
        assert x["action"] in ("allow", "review", "block")
        assert x["model_version"] == small_run[0].models.model_version

    inp.write_bytes(b'{"id": 1, "text": "ok"}\n{"id": 2, "text": 5}\n')
    res = runner.invoke(app, ["score", "--input", str(inp), "--output", str(outp)])
    assert res.exit_code == 2
    assert ":2:" in res.output and "text" in res.output
    inp.write_bytes(b'{"id": 1, "text": "ok"}\nnot json\n')
    res = runner.invoke(app, ["score", "--input", str(inp), "--output", str(outp)])
    assert res.exit_code == 2 and ":2: not valid JSON" in res.output


@pytest.mark.gpu
def test_gpu_matches_cpu(shipped: CommentModels) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = load_comment_models(ModerationSettings(device="cuda"))
    assert gpu.device.type == "cuda"
    texts = HARD_TEXTS[:1] + HARD_TEXTS[2:]
    for a, b in zip(gpu.score(texts), shipped.score(texts)):
        assert a.scores == pytest.approx(b.scores, abs=1e-3)
        assert a.sentiment == pytest.approx(b.sentiment, abs=1e-3)


def test_featurizer_sublinear_tf_dedupes_per_text() -> None:
    from models.text.features import FeatureConfig, Featurizer

    cfg = FeatureConfig(words=False, cased_words=False)
    sub = Featurizer(cfg)(["abab", "xy"], ["en", "en"])
    raw = Featurizer(FeatureConfig(words=False, cased_words=False, sublinear_tf=False))(["abab", "xy"], ["en", "en"])
    assert sub.tf is not None and raw.tf is None
    # per text: unique buckets, and tf = 1 + log(count) of the raw occurrences
    bounds = list(sub.offsets) + [len(sub.indices)]
    raw_bounds = list(raw.offsets) + [len(raw.indices)]
    for t in range(2):
        ids = sub.indices[bounds[t] : bounds[t + 1]]
        assert len(set(ids.tolist())) == len(ids)
        uniq, counts = np.unique(raw.indices[raw_bounds[t] : raw_bounds[t + 1]], return_counts=True)
        assert sorted(ids.tolist()) == uniq.tolist()
        order = np.argsort(ids)
        assert sub.tf[bounds[t] : bounds[t + 1]][order] == pytest.approx(1 + np.log(counts))


@pytest.mark.slow
def test_bench_models_measures_the_batch_size_the_worker_scores_at() -> None:
    """`reelstream bench models` reports comments/s at the configured batch size (what the worker's
    micro-batches are capped at) beside 1, 32 and 256 (what `reelstream score` uses), and says which it is."""
    from models.text.bench import bench

    if not DATA.exists():
        pytest.skip(f"training data not present at {DATA}")
    models = load_comment_models(ModerationSettings(device="cpu", batch_size=48))
    out = bench(models, DATA, threads=1, min_seconds=0.05)
    assert out["worker_batch_size"] == 48
    assert sorted(out["comments_per_s"]["cpu"]) == ["batch_1", "batch_256", "batch_32", "batch_48"]
    assert all(v > 0 for v in out["comments_per_s"]["cpu"].values())
    assert out["model_version"] == models.model_version and out["score_cli"]["subprocess_end_to_end_per_s"] > 0


def test_the_vocabulary_lookup_finds_exact_ranks_in_crowded_probe_runs() -> None:
    """Featurizer looks n-gram hashes up in a linear-probing table (one gather for most): a hash must get its
    exact vocabulary rank wherever its entry was displaced to, and a hash that is not in the vocabulary -1,
    including neighbours of kept hashes (same table slot) and the largest uint64 (the empty slots' key)."""
    from models.text.features import FeatureConfig, Featurizer

    rng = np.random.default_rng(0)
    base = np.unique(rng.integers(0, 2**62, 900, dtype=np.uint64) * np.uint64(4))
    crowd = (base[:100, None] + np.arange(1, 3, dtype=np.uint64)).ravel()  # same top bits: one probe run each
    top = np.iinfo(np.uint64).max
    for with_top in (False, True):
        vocab = np.unique(np.concatenate([base, crowd] + ([np.array([top], dtype=np.uint64)] if with_top else [])))
        feat = Featurizer(FeatureConfig(buckets=len(vocab), vocabulary=True), vocab)
        absent = np.concatenate([base[:100] + np.uint64(3), base[100:] + np.uint64(1), np.array([0], dtype=np.uint64)])
        queries = np.concatenate([vocab, absent, np.array([top], dtype=np.uint64)])
        rank = np.searchsorted(vocab, queries).clip(max=len(vocab) - 1)
        expected = np.where(vocab[rank] == queries, rank, -1)
        assert np.array_equal(feat._lookup(queries), expected)
        assert (expected[len(vocab) : -1] == -1).all() and (expected[-1] >= 0) == with_top


def test_a_batch_too_wide_for_32_bit_keys_featurizes_as_its_texts_alone() -> None:
    """(text, id) pairs are deduplicated on 32-bit keys when the batch's texts x buckets fit, 64-bit ones
    otherwise: both give each text what it gets alone."""
    from models.text.features import FeatureConfig, Featurizer

    feat = Featurizer(FeatureConfig(buckets=1 << 30))
    texts = ["you are an idiot", "", "垃圾视频，滚", "great great video", "好看"]
    langs = ["en", "en", "zh", "en", "zh"]
    whole = feat(texts, langs)  # 5 x 2**30 keys: 64-bit
    alone = [feat([t], [lang]) for t, lang in zip(texts, langs)]  # 2**30 keys: 32-bit
    assert np.array_equal(whole.indices, np.concatenate([a.indices for a in alone]))
    assert np.array_equal(whole.tf, np.concatenate([a.tf for a in alone]))
    assert whole.offsets.tolist() == np.cumsum([0] + [len(a.indices) for a in alone[:-1]]).tolist()


def test_vocabulary_keeps_frequent_ngrams_per_dataset_exactly() -> None:
    import dataclasses

    from models.text.features import FeatureConfig, Featurizer, build_vocabulary

    cfg = FeatureConfig(words=False, cased_words=False, en_chars=(2, 2))
    hashing = Featurizer(cfg)
    groups = [(["abab", "abx", "zz"], ["en"] * 3), (["qrq", "qrq", "qr"], ["en"] * 3)]
    vocab = build_vocabulary(hashing, groups, size=100, min_df=2)

    def grams(text: str) -> set[int]:
        return set(hashing.hashes([text], ["en"])[0].tolist())

    # per dataset, n-grams in >= 2 of its texts: " a", "ab" (dataset 1); " q", "qr", "rq", "q " (dataset 2)
    expected = (grams("ab") & grams("abx")) | grams("qrq") | (grams("qrq") & grams("qr"))
    assert set(vocab.tolist()) == expected
    assert np.all(np.diff(vocab.astype(np.float64)) > 0)  # sorted, unique
    assert np.array_equal(vocab, build_vocabulary(hashing, groups, size=100, min_df=2))  # deterministic
    # a smaller size keeps each dataset's most frequent n-grams first (best rank across datasets)
    top = build_vocabulary(hashing, groups, size=2, min_df=2)
    assert len(top) == 2 and len(set(top.tolist()) & grams("ab")) == 1 and len(set(top.tolist()) & grams("qrq")) == 1

    feat = Featurizer(dataclasses.replace(cfg, vocabulary=True, buckets=len(vocab)), vocab)
    batch = feat(["abab", "zz", "qrq"], ["en"] * 3)
    bounds = list(batch.offsets) + [len(batch.indices)]
    for t, text in enumerate(["abab", "zz", "qrq"]):
        ids = batch.indices[bounds[t] : bounds[t + 1]]
        known = sorted(int(np.searchsorted(vocab, np.uint64(h))) for h in grams(text) & expected)
        assert sorted(ids.tolist()) == known  # exact ranks; unknown n-grams ("zz") dropped
    with pytest.raises(ValueError):
        Featurizer(dataclasses.replace(cfg, vocabulary=True, buckets=len(vocab)))


def test_nb_scaled_regression_folds_into_weights() -> None:
    from scipy import sparse

    from models.text.linear import LinearTask, _scale, fit_task, nb_ratio

    rng = np.random.default_rng(0)
    x = sparse.random(200, 30, density=0.2, random_state=1, format="csr")
    y = (np.asarray(x[:, :5].sum(1)).ravel() > np.median(np.asarray(x[:, :5].sum(1)))).astype(np.float64)
    task = LinearTask("t", np.arange(200), [0], y[:, None], multiclass=False)
    r = nb_ratio(x, task)
    assert r is not None and r[:5].mean() > r[5:].mean()  # features of positives get positive ratios
    w, b = fit_task(_scale(x, r), task, 1.0)
    assert np.allclose(_scale(x, r) @ w, x @ (w * r[:, None]))
    multi = LinearTask("m", np.arange(200), [0, 1, 2], (2 * y).astype(np.int64), multiclass=True)
    assert np.allclose(nb_ratio(x, multi), r)  # two observed classes of three: same ratio
    assert nb_ratio(x, LinearTask("m", np.arange(200), [0, 1, 2], rng.integers(0, 3, 200), multiclass=True)) is None


def test_plain_columns_skip_the_validation_choice_and_are_fitted_at_the_default_c() -> None:
    """`hate` experts are fitted plain at C 4 whatever the validation split prefers (issue #17: that choice
    lost on both hate sources left out); the other heads still take C from the grid."""
    from models.text.linear import L2_C, LinearTask, Store, fit_linear_heads, fit_task, tfidf_matrix

    rng = np.random.default_rng(3)

    def store(n: int) -> tuple[Store, np.ndarray]:
        counts = rng.integers(3, 8, n)
        indices = rng.integers(0, 40, counts.sum())
        y = (np.bincount(np.repeat(np.arange(n), counts), weights=indices < 8, minlength=n) > 0).astype(np.float32)
        return Store(indices, None, counts, np.concatenate(([0], np.cumsum(counts)[:-1]))), y

    (train_store, y), (val_store, yv) = store(300), store(100)

    def tasks(y: np.ndarray) -> list[LinearTask]:
        return [LinearTask("d", np.arange(len(y)), [c], y[:, None], multiclass=False) for c in (0, 1)]

    weight, bias, idf = torch.zeros(40, 2), torch.zeros(2), np.ones(40, dtype=np.float32)
    chosen = fit_linear_heads(weight, bias, tasks(y), train_store, idf, tasks(yv), val_store, grid=(32.0,),
                              nb_grid=(), plain_columns=[0])  # fmt: skip
    assert chosen == {"d 0": f"{L2_C:g}", "d 1": "32"}
    x, used = tfidf_matrix(train_store, np.arange(300), idf)
    for col, c in ((0, L2_C), (1, 32.0)):
        w, b = fit_task(x, tasks(y)[col], c)
        assert np.allclose(weight[used, col].numpy(), w[:, 0], atol=1e-5) and abs(bias[col].item() - b[0]) < 1e-5


def test_joined_stores_hold_the_first_stores_rows_then_the_seconds() -> None:
    """The refit on training + validation rows joins their two featurized stores instead of featurizing again:
    every row of the joined store gives the TF-IDF (and dense columns) of its row in the store it came from."""
    from scipy import sparse

    from models.text.linear import Store, joined, tfidf_matrix

    rng = np.random.default_rng(7)

    def store(n: int) -> Store:
        counts = rng.integers(1, 6, n)
        return Store(rng.integers(0, 30, counts.sum()), rng.random(counts.sum()).astype(np.float32), counts,
                     np.concatenate(([0], np.cumsum(counts)[:-1])), rng.random((n, 3)).astype(np.float32))  # fmt: skip

    a, b, idf = store(50), store(20), rng.random(30).astype(np.float32) + 1
    used = np.arange(30)
    both = tfidf_matrix(joined(a, b), np.arange(70), idf, used)[0]
    apart = sparse.vstack([tfidf_matrix(a, np.arange(50), idf, used)[0], tfidf_matrix(b, np.arange(20), idf, used)[0]])
    assert np.allclose(both.toarray(), apart.toarray())


def test_a_refit_with_choices_takes_each_heads_c_and_scaling_and_no_validation() -> None:
    """`choices` (what a validated fit returned) refit each head with its C and NB scaling or not, on other rows
    and without a validation split (the refit on train + validation once the choice is made): on the same rows
    it gives the validated fit's weights, where a fit without them takes the default C, plain."""
    from models.text.linear import LinearTask, Store, fit_linear_heads

    rng = np.random.default_rng(11)
    counts = rng.integers(3, 8, 400)
    indices = rng.integers(0, 40, counts.sum())
    y = (np.bincount(np.repeat(np.arange(400), counts), weights=indices < 8, minlength=400) > 0).astype(np.float32)
    store = Store(indices, None, counts, np.concatenate(([0], np.cumsum(counts)[:-1])))
    train, val = LinearTask("d", np.arange(300), [0], y[:300, None], False), LinearTask("d", np.arange(300, 400), [0], y[300:, None], False)
    idf = np.ones(40, dtype=np.float32)
    for grid, nb_grid, label in (((), (2.0,), "2 NB"), ((32.0,), (), "32")):
        chosen_w, chosen_b = torch.zeros(40, 1), torch.zeros(1)
        chosen = fit_linear_heads(chosen_w, chosen_b, [train], store, idf, [val], store, grid=grid, nb_grid=nb_grid)
        assert chosen == {"d 0": label}
        refit_w, refit_b = torch.zeros(40, 1), torch.zeros(1)
        assert fit_linear_heads(refit_w, refit_b, [train], store, idf, choices=chosen) == chosen
        assert torch.allclose(refit_w, chosen_w, atol=1e-5) and torch.allclose(refit_b, chosen_b, atol=1e-5)
        default_w = torch.zeros(40, 1)
        fit_linear_heads(default_w, torch.zeros(1), [train], store, idf)
        assert not torch.allclose(default_w, chosen_w, atol=1e-3)


def test_task_idf_weights_a_head_by_its_own_rows_and_folds_into_its_weights() -> None:
    """With task_idf a head is fitted on its rows' TF-IDF with the idf of those rows (the floor's idf, lab probe
    of issue #17) and the ratio is folded into its weights: the served linear view gives the scaled fit's logits."""
    from models.text.linear import LinearTask, Store, _scale, fit_linear_heads, fit_task, task_idf_ratio, tfidf_matrix

    rng = np.random.default_rng(5)
    counts = rng.integers(3, 8, 400)
    indices = rng.integers(0, 40, counts.sum())
    indices[: counts[:200].sum()] %= 20  # the task's rows use half the buckets: their idf differs from the whole set's
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    store = Store(indices, None, counts, starts)
    row_of = np.repeat(np.arange(400), counts)
    df_all = np.bincount(np.unique(row_of * 40 + indices) % 40, minlength=40)
    idf = (np.log(401 / (1 + df_all)) + 1).astype(np.float32)
    rows = np.arange(200)
    y = (np.bincount(row_of[row_of < 200], weights=indices[row_of < 200] < 4, minlength=200) > 0).astype(np.float32)
    task = LinearTask("d", rows, [0], y[:, None], multiclass=False)

    x, used = tfidf_matrix(store, rows, idf)
    ratio = task_idf_ratio(x, len(used), idf[used])
    df_task = np.bincount(np.unique(row_of[row_of < 200] * 40 + indices[row_of < 200]) % 40, minlength=40)[used]
    assert np.allclose(ratio * idf[used], np.log(201 / (1 + df_task)) + 1, rtol=1e-6)
    assert not np.allclose(ratio, 1.0)

    weight, bias = torch.zeros(40, 1), torch.zeros(1)
    fit_linear_heads(weight, bias, [task], store, idf, task_idf=True)
    w, b = fit_task(_scale(x, ratio), task)
    served = x @ weight[used].numpy().astype(np.float64) + bias.numpy()
    assert np.allclose(served, _scale(x, ratio) @ w + b, atol=1e-4)
    plain_w, bias0 = torch.zeros(40, 1), torch.zeros(1)
    fit_linear_heads(plain_w, bias0, [task], store, idf)
    assert not torch.allclose(plain_w, weight, atol=1e-3)


def test_static_tokenizer_matches_minilm_tokenizer(shipped: CommentModels) -> None:
    from tokenizers import Tokenizer

    if shipped.pieces is None:
        pytest.skip("shipped weights have no static embedding view")
    ref = Tokenizer.from_file(str(shipped.static_tokenizer_path))
    ref.no_padding()
    texts = ["Hello, World! I don't like Café-au-lait @user #MAGA", "does n't -lrb- great movie -rrb- .", "", "这个视频"]
    ids, offsets = shipped.pieces(texts)
    bounds = list(offsets) + [len(ids)]
    for i, text in enumerate(texts):
        assert ids[bounds[i] : bounds[i + 1]].tolist() == ref.encode(text, add_special_tokens=False).ids[:256]
    assert shipped.net.config.static_dims > 0


def test_newer_weights_saved_where_the_model_was_loaded_from_are_picked_up_once(tmp_path, shipped) -> None:
    """The worker's hot swap (streams.app swap_comment_model) polls `newer`: nothing while the file is
    unchanged, the new version once another is saved (atomically) there, and nothing again after."""
    import shutil

    from models.text.comments import WEIGHTS_FILE
    from models.text.static_embeddings import TOKENIZER_FILE

    for name in (WEIGHTS_FILE, TOKENIZER_FILE):
        shutil.copyfile(SHIPPED_DIR / name, tmp_path / name)
    first = load_comment_models(ModerationSettings(model_dir=str(tmp_path), device="cpu"))
    assert first.model_version == shipped.model_version and first.newer() is None
    first.save(tmp_path / WEIGHTS_FILE)  # rewritten, same version
    assert first.newer() is None and first.newer() is None
    first.save(tmp_path / WEIGHTS_FILE, "comment-net-v2")
    assert not list(tmp_path.glob(".*.tmp"))  # written beside, renamed into place
    second = first.newer()
    assert second is not None and second.model_version == "comment-net-v2"
    assert second.newer() is None
    assert [s.scores for s in second.score(["you are an idiot"])] == [s.scores for s in first.score(["you are an idiot"])]
    assert shipped.variant(torch.device("cpu"), 2).newer() is None  # built in memory: nowhere to look


def test_the_actions_report_gives_blocked_and_review_shares_and_block_precision_per_dataset() -> None:
    from models.text.data import Example
    from models.text.evaluation import actions_report

    everything = {c: Thresholds(review=0.0, block=0.0) for c in CATEGORIES}  # block every text
    models = load_comment_models(ModerationSettings(device="cpu", thresholds=everything))
    rows = [Example("olid_offensive", t, "en", {"offensive": y}) for t, y in
            (("you are a fucking idiot", 1), ("what a lovely video", 0), ("shut up you moron", 1), ("nice", 0))]
    rows += [Example("sst2", "a fine film", "en", {"sentiment": 2})]
    report = actions_report(models, rows)
    assert report["olid_offensive"] == {"n": 4, "blocked": 1.0, "review": 0.0, "block_precision": 0.5, "offensive_blocked": 1.0}
    assert report["sst2"] == {"n": 1, "blocked": 1.0, "review": 0.0}  # no offensive labels: no precision
    never = {c: Thresholds(review=1.0, block=1.0) for c in CATEGORIES}
    quiet = actions_report(load_comment_models(ModerationSettings(device="cpu", thresholds=never)), rows)
    assert quiet["olid_offensive"]["blocked"] == 0.0 and quiet["olid_offensive"]["block_precision"] is None

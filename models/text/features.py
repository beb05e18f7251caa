"""Character and word n-grams, computed for a whole batch at once with numpy.

Per-text Python loops over n-grams would cap throughput at a few thousand comments/s; here the batch is
one code-point array and every n-gram hash is a vector operation, so featurizing costs microseconds per
comment. Hashes are fixed polynomial hashes (not Python's salted `hash`), so features are identical across
processes and machines.

Each n-gram has a 64-bit hash. With a vocabulary (a sorted array of the 64-bit hashes kept at training
time, as a TfidfVectorizer keeps its min_df / max_features vocabulary), an n-gram's feature id is its rank
in the vocabulary and unknown n-grams are dropped, so no two kept n-grams share a weight (64-bit collisions
are negligible); without one, the id is the hash modulo `buckets` (hashing trick).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

_P = np.uint64(0x100000001B3)  # odd multiplier: invertible modulo 2**64
_P_INV = np.uint64(pow(0x100000001B3, -1, 2**64))
_SALT_WORD = np.uint64(0x9E3779B97F4A7C15)
_SALT_BIGRAM = np.uint64(0xC2B2AE3D27D4EB4F)
_SALT_CASED = np.uint64(0x165667B19E3779F9)
_SALT_CHAR = [np.uint64((n * 0xC2B2AE3D27D4EB4F) % 2**64) for n in range(16)]


@dataclass(frozen=True)
class FeatureConfig:
    """N-gram ranges per language and the size of the feature space (hash buckets, or vocabulary size)."""

    buckets: int = 1 << 18
    vocabulary: bool = False  # ids are ranks in a vocabulary of `buckets` n-gram hashes (see build_vocabulary)
    en_chars: tuple[int, int] = (2, 5)
    zh_chars: tuple[int, int] = (1, 4)
    words: bool = True  # word unigrams + bigrams (Latin-script tokens; CJK is covered by char n-grams)
    cased_words: bool = True  # also original-case word unigrams: "@USER" vs "@user" vs "RT" tell sources apart
    sublinear_tf: bool = True  # one entry per (text, bucket) with weight 1 + log(count), as the baseline's sublinear_tf


@dataclass(frozen=True)
class Batch:
    """EmbeddingBag input: bucket ids of all texts back to back, and where each text starts."""

    indices: np.ndarray  # int64 [n_features]
    offsets: np.ndarray  # int64 [n_texts]
    tf: np.ndarray | None = None  # float32 [n_features]: term-frequency weight of each entry (None: 1 each)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads polynomial hashes over all bits before taking the bucket."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _word_mask(cp: np.ndarray) -> np.ndarray:
    """Characters that form Latin-script tokens: letters, digits, _ ' # @ and accented Latin letters."""
    return (
        ((cp >= 97) & (cp <= 122))
        | ((cp >= 65) & (cp <= 90))
        | ((cp >= 48) & (cp <= 57))
        | (cp == 95)
        | (cp == 39)
        | (cp == 35)
        | (cp == 64)
        | ((cp >= 0xC0) & (cp <= 0x24F))
    )


class Featurizer:
    """Turns texts (already length-capped) with their languages into an EmbeddingBag batch."""

    def __init__(self, config: FeatureConfig, vocab: np.ndarray | None = None) -> None:
        if config.vocabulary and (vocab is None or len(vocab) != config.buckets):
            raise ValueError(f"this feature config needs a vocabulary of {config.buckets} n-gram hashes")
        self.config = config
        self.max_n = max(config.en_chars[1], config.zh_chars[1])
        self.vocab = None if not config.vocabulary else np.ascontiguousarray(vocab, dtype=np.uint64)
        if self.vocab is not None:
            # A linear-probing table over the sorted vocabulary, addressed by the hashes' top `bits` bits
            # (hashes are uniformly mixed; a load of 1/8 to 1/4): most n-grams are found or ruled out by one
            # gather, where a binary search would take 18. Entries go in in sorted order, so the keys along
            # any probe run increase and a probe stops at the first key above the hash.
            bits = int(np.ceil(np.log2(max(len(self.vocab), 2)))) + 2
            self._shift = np.uint64(64 - bits)
            home = (self.vocab >> self._shift).astype(np.int64)
            rank = np.arange(len(self.vocab), dtype=np.int64)
            slot = rank + np.maximum.accumulate(home - rank) if len(rank) else rank  # max(home, previous + 1)
            size = max(1 << bits, int(slot[-1]) + 1 if len(slot) else 0) + 1  # the last slot stays empty
            self._keys = np.full(size, np.iinfo(np.uint64).max, dtype=np.uint64)  # empty: above every hash
            self._ranks = np.full(size, -1, dtype=np.int64)
            self._keys[slot] = self.vocab
            self._ranks[slot] = rank

    def __call__(self, texts: Sequence[str], langs: Sequence[str]) -> Batch:
        n_texts = len(texts)
        all_ids, all_rows = self.hashes(texts, langs)
        # (text, id) keys fit 32 bits for serving batches, and numpy sorts 32-bit keys ~1.7x faster than 64.
        key_type = np.uint32 if n_texts * self.config.buckets <= 1 << 32 else np.uint64
        buckets = key_type(self.config.buckets)
        if self.vocab is not None:
            pos = self._lookup(all_ids)
            known = pos >= 0
            all_ids, all_rows = pos[known].astype(key_type), all_rows[known]
        else:
            all_ids = (all_ids % np.uint64(self.config.buckets)).astype(key_type)
        if self.config.sublinear_tf:
            # Unique (text, id) pairs, sorted by text: duplicates become one entry weighted 1 + log(count).
            keys, counts_per = np.unique(all_rows.astype(key_type) * buckets + all_ids, return_counts=True)
            all_rows = (keys // buckets).astype(np.int64)
            indices = (keys % buckets).astype(np.int64)
            tf = (1.0 + np.log(counts_per)).astype(np.float32)
        else:
            order = np.argsort(all_rows, kind="stable")  # word features come after all char n-grams
            all_ids, all_rows = all_ids[order], all_rows[order]
            indices = all_ids.astype(np.int64)
            tf = None
        counts = np.bincount(all_rows, minlength=n_texts)
        offsets = np.zeros(n_texts, dtype=np.int64)
        np.cumsum(counts[:-1], out=offsets[1:])
        return Batch(indices, offsets, tf)

    def _lookup(self, ids: np.ndarray) -> np.ndarray:
        """Vocabulary rank of each hash, -1 where it is not in the vocabulary."""
        probe = (ids >> self._shift).view(np.int64)
        key = self._keys[probe]
        pos = np.where(key == ids, self._ranks[probe], -1)
        cand = np.flatnonzero(key < ids)  # a smaller key sits in this slot: the hash may be further on
        while len(cand):
            probe[cand] += 1
            key = self._keys[probe[cand]]
            hit = key == ids[cand]
            pos[cand[hit]] = self._ranks[probe[cand[hit]]]
            cand = cand[key < ids[cand]]
        return pos

    def hashes(self, texts: Sequence[str], langs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """64-bit hash of every n-gram occurrence (uint64) and the index of its text (int64)."""
        raw = "\x00".join(" " + t.replace("\x00", " ") + " " for t in texts)
        cp = np.frombuffer(raw.lower().encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        sentinel = cp == 0
        row = np.cumsum(sentinel)  # text index of every position (sentinels are never inside an n-gram)
        length = len(cp)
        is_zh = np.array([lang == "zh" for lang in langs], dtype=bool)[row]
        lo = np.where(is_zh, self.config.zh_chars[0], self.config.en_chars[0])
        # The longest n-gram kept at each position: up to the language's longest, ending before the next
        # sentinel (or the end of the batch).
        next_sentinel = np.append(np.flatnonzero(sentinel), length)[row]
        longest = np.where(sentinel, 0, np.minimum(np.where(is_zh, self.config.zh_chars[1], self.config.en_chars[1]),
                                                   next_sentinel - np.arange(length)))

        padded = np.concatenate((cp, np.zeros(self.max_n, dtype=np.uint64)))
        hashes = np.empty((length, self.max_n), dtype=np.uint64)
        keep = np.empty((length, self.max_n), dtype=bool)
        h = np.zeros(length, dtype=np.uint64)
        for n in range(1, self.max_n + 1):
            h = h * _P + padded[n - 1 : n - 1 + length] + np.uint64(1)
            hashes[:, n - 1] = _mix(h + _SALT_CHAR[n])
            keep[:, n - 1] = (lo <= n) & (n <= longest)
        ids = [hashes.ravel()[keep.ravel()]]
        rows = [np.repeat(row, np.maximum(longest - lo + 1, 0))]  # a position's kept n-grams are contiguous in n

        if self.config.words:
            w_ids, w_rows = self._words(cp, row, bigrams=True)
            ids.append(w_ids)
            rows.append(w_rows)
        if self.config.cased_words:
            cased = np.frombuffer(raw.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
            c_ids, c_rows = self._words(cased, np.cumsum(cased == 0), bigrams=False)
            ids.append(_mix(c_ids ^ _SALT_CASED))
            rows.append(c_rows)
        return np.concatenate(ids), np.concatenate(rows).astype(np.int64)

    def _words(self, cp: np.ndarray, row: np.ndarray, bigrams: bool) -> tuple[np.ndarray, np.ndarray]:
        """Hash every maximal run of word characters and (if bigrams) every pair of neighbouring runs."""
        mask = _word_mask(cp)
        edges = np.diff(np.concatenate(([False], mask, [False])).astype(np.int8))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        if len(starts) == 0:
            return np.empty(0, np.uint64), np.empty(0, np.int64)
        # Position-independent run hash: (G[end] - G[start]) * P^-start, with G the prefix sums of cp*P^i.
        length = len(cp)
        p_pow = np.empty(length, dtype=np.uint64)
        p_pow[0] = 1
        p_inv = np.empty(length, dtype=np.uint64)
        p_inv[0] = 1
        if length > 1:
            p_pow[1:] = np.cumprod(np.full(length - 1, _P, dtype=np.uint64))
            p_inv[1:] = np.cumprod(np.full(length - 1, _P_INV, dtype=np.uint64))
        g = np.concatenate(([np.uint64(0)], np.cumsum((cp + np.uint64(1)) * p_pow, dtype=np.uint64)))
        word_h = (g[ends] - g[starts]) * p_inv[starts]
        word_rows = row[starts]
        uni = _mix(word_h ^ _SALT_WORD)
        if not bigrams:
            return uni, word_rows
        same = word_rows[1:] == word_rows[:-1]
        bi = _mix(word_h[:-1] * _P + _mix(word_h[1:]) + _SALT_BIGRAM)[same]
        return np.concatenate((uni, bi)), np.concatenate((word_rows, word_rows[:-1][same]))


def build_vocabulary(
    featurizer: Featurizer,
    groups: Sequence[tuple[Sequence[str], Sequence[str]]],
    size: int,
    min_df: int = 2,
    chunk: int = 2048,
) -> np.ndarray:
    """Sorted uint64 n-gram hashes to keep, at most `size`: within each group (a dataset's training texts
    and languages), n-grams in at least `min_df` texts ranked by document frequency (most frequent first,
    as TfidfVectorizer's max_features keeps them); across groups, n-grams by their best rank in any group,
    so every dataset keeps its own most frequent n-grams (a union of per-dataset top-k vocabularies, k as
    large as `size` allows). Deterministic: ties are broken by the hash."""
    keys, ranks = [], []
    for texts, langs in groups:
        per_text = []
        for s in range(0, len(texts), chunk):
            ids, rows = featurizer.hashes(texts[s : s + chunk], langs[s : s + chunk])
            order = np.lexsort((ids, rows))
            ids, rows = ids[order], rows[order]
            first = np.ones(len(ids), dtype=bool)
            first[1:] = (ids[1:] != ids[:-1]) | (rows[1:] != rows[:-1])
            per_text.append(ids[first])  # each n-gram once per text
        if not per_text:
            continue
        uniq, df = np.unique(np.concatenate(per_text), return_counts=True)
        uniq, df = uniq[df >= min_df], df[df >= min_df]
        order = np.lexsort((uniq, -df))
        keys.append(uniq[order])
        ranks.append(np.arange(len(order), dtype=np.int64))
    if not keys:
        return np.empty(0, dtype=np.uint64)
    all_keys, all_ranks = np.concatenate(keys), np.concatenate(ranks)
    order = np.lexsort((all_keys, all_ranks))
    all_keys, all_ranks = all_keys[order], all_ranks[order]
    _, first = np.unique(all_keys, return_index=True)  # first occurrence in (rank, key) order = best rank
    best = np.sort(first)[:size]
    return np.sort(all_keys[best])

"""Approximate MIPS: IndexIVFFlat under L2 on vectors lifted to dim + 1, with a hashtable direct map.

Why this shape (measured, see ../shared/DESIGN.md): IVF clustering on raw ALS factors under inner product
gives recall 0.2-0.3 because the norms vary; HNSW cannot remove; IDMap2 over IVF returns wrong ids after
remove_ids. The hashtable direct map gives ~0.1 ms remove_ids and in-place update_vectors.

MIPS -> L2: with radius R >= every item norm, an item x is stored as [x, sqrt(R^2 - |x|^2)] and a query q as
[s q, 0], so |q' - x'|^2 = s^2 |q|^2 + R^2 - 2 s q.x: nearest in L2 is largest inner product, and the score
is recovered from the distance. The ranking within the probed lists does not depend on s, but which lists are
probed does: scaling every query to norm R (s = R / |q|) raised recall@20 at nprobe 32 / nlist 1024 / 200k
ALS-like items from 0.88 (s = 1) to 0.935; norms from R/4 to 4R measured the same.

Norm overflow: R is `norm_headroom` x the largest norm at training. An upsert whose vector is longer than R
could not be lifted (the extra coordinate would be imaginary), so it first grows R to headroom x that norm in
place (`_relift`: O(N), 0.14 s measured at 1M items, no retraining) and then proceeds; R never shrinks. A
larger headroom makes relifts rarer but costs recall at equal nprobe (measured at 1M items, nlist 4096,
nprobe 96: 0.963 with headroom 1.0, 0.953 with 1.2).

Cold start: k-means needs ~39 points per list, so until `nlist x train_per_list` vectors have arrived the
index is an ExactIndex (exact results, fine at that size); the upsert that crosses the threshold trains.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Self

import faiss
import numpy as np

from indexer.base import Hits, check_queries, check_vectors, last_occurrence, query_skips, search_grouped
from indexer.exact import ExactIndex
from indexer.locking import RWLock, omp_threads
from indexer.snapshot import decode_ids, encode_ids, pack, unpack

_BULK = 4096  # writes of at least this many vectors use every core


class IvfIndex:
    """IVF MIPS keyed by string ids: exact until trained, then IndexIVFFlat over lifted vectors."""

    kind = "ivf"

    def __init__(
        self,
        dim: int,
        *,
        nlist: int,
        nprobe: int,
        train_per_list: int = 39,
        norm_headroom: float = 1.1,
        search_threads: int = 1,
        seed: int = 0,
    ) -> None:
        if norm_headroom < 1.0:
            raise ValueError(f"norm_headroom must be >= 1, got {norm_headroom}")
        self._dim = dim
        self._nlist = nlist
        self._nprobe = nprobe
        self._train_per_list = train_per_list
        self._headroom = norm_headroom
        self._threads = search_threads
        self._seed = seed
        self._exact: ExactIndex | None = ExactIndex(dim, search_threads=search_threads)
        self._training = False
        self._ivf: faiss.IndexIVFFlat | None = None
        self._radius = 0.0
        self._key_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next_key = 0
        self._lock = RWLock()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def trained(self) -> bool:
        return self._ivf is not None

    @property
    def train_threshold(self) -> int:
        return self._nlist * self._train_per_list

    def __len__(self) -> int:
        with self._lock.read():
            return len(self._exact) if self._exact is not None else len(self._key_of)

    def __contains__(self, video_id: object) -> bool:
        with self._lock.read():
            return video_id in self._exact if self._exact is not None else video_id in self._key_of

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        x = check_vectors(ids, vectors, self._dim)
        unique, src = last_occurrence(ids)
        x = x[src]
        with self._lock.write():
            if self._exact is not None:
                self._exact.upsert(unique, x)
                train = len(self._exact) >= self.train_threshold and not self._training
                self._training |= train
            else:
                self._write(unique, x)
                return
        if train:
            self._leave_cold_start()

    def _write(self, unique: list[str], x: np.ndarray) -> None:
        """Upsert into the trained IVF (under the write lock)."""
        longest = _longest(x)
        if longest > self._radius:
            self._relift(self._headroom * longest)
        known = np.array([i in self._key_of for i in unique], dtype=bool)
        # Small writes run on the search threads: waking OpenMP workers on a busy machine cost a
        # single-item upsert 11 ms (p50, 1M items) against ~0.2 ms without.
        with omp_threads(self._threads if len(unique) < _BULK else faiss.omp_get_max_threads()):
            if known.any():
                keys = np.array([self._key_of[i] for i, k in zip(unique, known) if k], dtype=np.int64)
                self._ivf.update_vectors(keys, _lift(x[known], self._radius))
            if not known.all():
                fresh = [i for i, k in zip(unique, known) if not k]
                keys = np.arange(self._next_key, self._next_key + len(fresh), dtype=np.int64)
                self._next_key += len(fresh)
                self._ivf.add_with_ids(_lift(x[~known], self._radius), keys)
                self._key_of.update(zip(fresh, keys.tolist()))
                self._id_of.update(zip(keys.tolist(), fresh))

    def remove(self, ids: Collection[str]) -> int:
        with self._lock.write():
            if self._exact is not None:
                return self._exact.remove(ids)
            keys = [self._key_of.pop(i) for i in set(ids) if i in self._key_of]
            for key in keys:
                del self._id_of[key]
            if keys:
                self._ivf.remove_ids(np.array(keys, dtype=np.int64))
            return len(keys)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Collection[str] | None = None,
        excludes: Sequence[Collection[str]] | None = None,
    ) -> Hits:
        q = check_queries(queries, k, self._dim)
        with self._lock.read():
            if self._exact is not None:
                return self._exact.search(q, k, exclude, excludes)
            n = len(self._key_of)
            shared, skips = query_skips(q.shape[0], exclude, excludes, self._key_of)
            norms = np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64))
            scale = np.divide(self._radius, norms, out=np.ones_like(norms), where=norms > 0)
            lifted = np.hstack([q * scale[:, None].astype(np.float32), np.zeros((q.shape[0], 1), dtype=np.float32)])
            # |sq' - x'|^2 = s^2|q|^2 + R^2 - 2s q.x, solved for q.x in float64 to keep the scores' precision.
            base = (scale * norms) ** 2 + self._radius**2

            def ivf_search(group: list[int], fetch: int) -> tuple[np.ndarray, np.ndarray]:
                dist, keys = self._ivf.search(lifted[group], fetch)
                return (base[group][:, None] - dist) / (2 * scale[group][:, None]), keys

            with omp_threads(self._threads):
                return search_grouped(shared, skips, k, n, self._id_of, ivf_search)

    def snapshot(self) -> bytes:
        with self._lock.read():
            meta = {
                "kind": self.kind, "dim": self._dim, "nlist": self._nlist, "nprobe": self._nprobe,
                "train_per_list": self._train_per_list, "norm_headroom": self._headroom,
                "search_threads": self._threads, "seed": self._seed,
                "radius": self._radius, "next_key": self._next_key,
            }
            if self._exact is not None:
                return pack(meta, {"exact": np.frombuffer(self._exact.snapshot(), dtype=np.uint8)})
            keys = np.fromiter(self._id_of, dtype=np.int64, count=len(self._id_of))
            return pack(meta, {"faiss": faiss.serialize_index(self._ivf), "keys": keys,
                               **encode_ids(list(self._id_of.values()))})

    @classmethod
    def restore(cls, data: bytes) -> Self:
        meta, arrays = unpack(data)
        if meta.get("kind") != cls.kind:
            raise ValueError(f"snapshot holds a {meta.get('kind')!r} index, not {cls.kind!r}")
        index = cls(meta["dim"], nlist=meta["nlist"], nprobe=meta["nprobe"], train_per_list=meta["train_per_list"],
                    norm_headroom=meta["norm_headroom"], search_threads=meta["search_threads"], seed=meta["seed"])
        index._radius = meta["radius"]
        index._next_key = meta["next_key"]
        if "exact" in arrays:
            index._exact = ExactIndex.restore(arrays["exact"].tobytes())
            return index
        index._exact = None
        index._ivf = faiss.deserialize_index(arrays["faiss"])
        index._ivf.nprobe = index._nprobe
        ids = decode_ids(arrays)
        keys = arrays["keys"].tolist()
        index._id_of = dict(zip(keys, ids))
        index._key_of = dict(zip(ids, keys))
        return index

    def _relift(self, radius: float) -> None:
        """Grow R in place, in O(N) and without retraining. Each stored extra coordinate e becomes
        sqrt(e^2 + R'^2 - R^2) (exact for the new R), each centroid's becomes the mean of its members' (or the
        same formula for an empty list); vectors stay in their lists, which stays correct (every distance is
        exact) but lets the partition drift from nearest-centroid until vectors are updated."""
        grow = radius**2 - self._radius**2
        lists, width = self._ivf.invlists, self._dim + 1
        centroids = self._ivf.quantizer.reconstruct_n(0, self._nlist)
        for lst in range(self._nlist):
            size = lists.list_size(lst)
            if not size:
                centroids[lst, -1] = np.sqrt(np.float64(centroids[lst, -1]) ** 2 + grow)
                continue
            ids = faiss.rev_swig_ptr(lists.get_ids(lst), size).copy()
            codes = np.frombuffer(faiss.rev_swig_ptr(lists.get_codes(lst), size * lists.code_size), dtype=np.float32)
            codes = codes.reshape(size, width).copy()
            codes[:, -1] = np.sqrt(codes[:, -1].astype(np.float64) ** 2 + grow)
            centroids[lst, -1] = codes[:, -1].mean()
            lists.update_entries(lst, 0, size, faiss.swig_ptr(ids), faiss.swig_ptr(codes.view(np.uint8)))
        self._ivf.quantizer.reset()
        self._ivf.quantizer.add(centroids)
        self._radius = radius

    def _leave_cold_start(self) -> None:
        """Train the coarse quantizer without holding the lock, so searches and writes go on (exactly) through
        the k-means, the slow part; then move everything into the IVF under the write lock (one bulk add)."""
        try:
            _, x = self._exact.items()
            if len(x) < self.train_threshold:  # removals overtook us: stay exact until the next crossing
                return
            radius = self._headroom * _longest(x)
            sample = x[np.random.default_rng(self._seed).choice(len(x), self.train_threshold, replace=False)]
            # niter 10 as IndexIVF.train uses; 25 (faiss.Kmeans default) measured no better recall at 1M.
            kmeans = faiss.Kmeans(self._dim + 1, self._nlist, niter=10, seed=self._seed)
            kmeans.train(_lift(sample, radius))
            with self._lock.write():
                ids, x = self._exact.items()
                self._install(kmeans.centroids, radius, ids, x)
        finally:
            self._training = False

    def _install(self, centroids: np.ndarray, radius: float, ids: list[str], x: np.ndarray) -> None:
        grown = max(radius, self._headroom * _longest(x))  # a longer vector may have arrived during training
        centroids[:, -1] = np.sqrt(centroids[:, -1].astype(np.float64) ** 2 + (grown**2 - radius**2))
        quantizer = faiss.IndexFlatL2(self._dim + 1)
        quantizer.add(centroids)
        ivf = faiss.IndexIVFFlat(quantizer, self._dim + 1, self._nlist, faiss.METRIC_L2)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        ivf.nprobe = self._nprobe
        keys = np.arange(len(ids), dtype=np.int64)
        ivf.add_with_ids(_lift(x, grown), keys)
        self._ivf, self._radius, self._exact = ivf, grown, None
        self._next_key = len(ids)
        self._key_of = dict(zip(ids, keys.tolist()))
        self._id_of = dict(zip(keys.tolist(), ids))


def _longest(x: np.ndarray) -> float:
    return float(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64).max(initial=0.0)))


def _lift(x: np.ndarray, radius: float) -> np.ndarray:
    """[x, sqrt(R^2 - |x|^2)]: every item on the sphere of radius R, so L2 order is inner-product order."""
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    return np.hstack([x, np.sqrt(np.maximum(radius**2 - sq, 0.0))[:, None].astype(np.float32)])

"""Reasons at predict speed: attributions along each tree's decision path.

For every node of every tree we know the expected output of the rows that reach it (the
leaf values under it, weighted by their training counts: the "cover" TreeSHAP uses too).
When a row moves from a node to a child, the change in that expectation is credited to the
feature the node splits on. Summed over a row's path through every tree, the credits add up
exactly to its raw score minus the model's average (the bias): a local, additive
explanation in log-odds (Saabas' method, as in `treeinterpreter`).

The work per tree is done once, when the model is loaded: each leaf keeps the list of
(feature, credit) pairs on its path, and its value. Scoring then needs only the leaf each row
reaches in each tree (LightGBM's `pred_leaf`, one pass over the trees like a plain predict),
and a compiled loop adds up the leaves' values (the score) and credits (the reasons) at once.
TreeSHAP (`pred_contrib`) instead costs milliseconds per row; `agreement` measures how often
both name the same top reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numba
import numpy as np

MISSING = {"None": 0, "Zero": 1, "NaN": 2}
PARALLEL_ROWS = 2048  # below this, one thread: a pool costs more than it saves
ZERO = 1e-35  # LightGBM's kZeroThreshold


@dataclass(frozen=True)
class PathAttribution:
    """A booster's trees as flat arrays, each node with its expected output.

    Node arrays are indexed by a global node number; a child index below zero is a leaf
    (leaf g is stored as -1 - g). `score` walks every tree for every row exactly as LightGBM
    does (the same missing-value and categorical rules), adding up the leaf values (the raw
    score, bit for bit LightGBM's) and crediting each step's change in expectation to the
    split's feature."""

    root: np.ndarray  # int32 (trees): root node, or -1 - leaf for a one-leaf tree
    feature: np.ndarray  # int32 (nodes)
    threshold: np.ndarray  # float64 (nodes); for categorical nodes unused
    categorical: np.ndarray  # bool (nodes)
    default_left: np.ndarray  # bool (nodes)
    missing: np.ndarray  # int8 (nodes): 0 None, 1 Zero, 2 NaN
    left: np.ndarray  # int32 (nodes)
    right: np.ndarray  # int32 (nodes)
    expected: np.ndarray  # float64 (nodes)
    cat_ptr: np.ndarray  # int64 (nodes + 1): each node's left-going categories in cat_left
    cat_left: np.ndarray  # int32
    leaf_value: np.ndarray  # float64 (leaves)
    bias: float  # sum over trees of the root's expected output
    n_features: int

    @classmethod
    def from_booster(cls, booster: lgb.Booster, num_iteration: int | None = None):
        dump = booster.dump_model(num_iteration=num_iteration or -1)
        b = _Builder()
        roots = [b.add(tree["tree_structure"]) for tree in dump["tree_info"]]
        bias = sum(_expected(tree["tree_structure"])[0] for tree in dump["tree_info"])
        return cls(
            root=np.asarray(roots, dtype=np.int32),
            feature=np.asarray(b.feature, dtype=np.int32),
            threshold=np.asarray(b.threshold, dtype=np.float64),
            categorical=np.asarray(b.categorical, dtype=np.bool_),
            default_left=np.asarray(b.default_left, dtype=np.bool_),
            missing=np.asarray(b.missing, dtype=np.int8),
            left=np.asarray(b.left, dtype=np.int32),
            right=np.asarray(b.right, dtype=np.int32),
            expected=np.asarray(b.expected, dtype=np.float64),
            cat_ptr=np.asarray(b.cat_ptr, dtype=np.int64),
            cat_left=np.asarray(b.cat_left, dtype=np.int32),
            leaf_value=np.asarray(b.leaf_value, dtype=np.float64),
            bias=float(bias),
            n_features=int(dump["max_feature_idx"]) + 1,
        )

    @property
    def trees(self) -> int:
        return len(self.root)

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(raw score, credits rows x features) for the model matrix `X` (categoricals as
        their integer codes, missing as NaN): one compiled pass over the trees."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} feature columns, got {X.shape}")
        walk = _walk_parallel if len(X) >= PARALLEL_ROWS else _walk_serial
        return walk(
            X,
            self.root,
            self.feature,
            self.threshold,
            self.categorical,
            self.default_left,
            self.missing,
            self.left,
            self.right,
            self.expected,
            self.cat_ptr,
            self.cat_left,
            self.leaf_value,
        )


def _expected(node: dict) -> tuple[float, float]:
    """(expected output, count) of the rows reaching `node`, from the leaves under it."""
    if "leaf_value" in node:
        return float(node["leaf_value"]), float(node.get("leaf_count", 0) or 0)
    lv, lc = _expected(node["left_child"])
    rv, rc = _expected(node["right_child"])
    n = lc + rc
    return ((lv * lc + rv * rc) / n if n else (lv + rv) / 2), n


class _Builder:
    """Flattens dumped trees into the node arrays (building the model, not scoring)."""

    def __init__(self) -> None:
        self.feature, self.threshold, self.categorical = [], [], []
        self.default_left, self.missing, self.left, self.right = [], [], [], []
        self.expected, self.cat_ptr, self.cat_left, self.leaf_value = [], [0], [], []

    def add(self, node: dict) -> int:
        if "leaf_value" in node:
            self.leaf_value.append(float(node["leaf_value"]))
            return -len(self.leaf_value)  # -1 - index
        i = len(self.feature)
        cat = node["decision_type"] == "=="
        self.feature.append(int(node["split_feature"]))
        self.threshold.append(0.0 if cat else float(node["threshold"]))
        self.categorical.append(cat)
        self.default_left.append(bool(node["default_left"]))
        self.missing.append(MISSING[node["missing_type"]])
        if cat:
            self.cat_left.extend(int(c) for c in str(node["threshold"]).split("||"))
        self.cat_ptr.append(len(self.cat_left))
        self.expected.append(_expected(node)[0])
        self.left.append(0)
        self.right.append(0)
        self.left[i] = self.add(node["left_child"])
        self.right[i] = self.add(node["right_child"])
        return i


def _walk_trees_py(
    X,
    root,
    feature,
    threshold,
    categorical,
    default_left,
    missing,
    left,
    right,
    expected,
    cat_ptr,
    cat_left,
    leaf_value,
):
    n, n_features = X.shape
    raw = np.empty(n, dtype=np.float64)
    credit = np.zeros((n, n_features), dtype=np.float64)
    for i in numba.prange(n):
        s = 0.0
        for t in range(root.shape[0]):
            node = root[t]
            if node < 0:  # a tree of one leaf: its value, no credit
                s += leaf_value[-1 - node]
                continue
            e = expected[node]
            while node >= 0:
                f = feature[node]
                x = X[i, f]
                if categorical[node]:
                    go_left = False
                    if not np.isnan(x) and x >= 0:
                        code = int(x)
                        for k in range(cat_ptr[node], cat_ptr[node + 1]):
                            if cat_left[k] == code:
                                go_left = True
                                break
                else:
                    m = missing[node]
                    if np.isnan(x) and m != 2:
                        x = 0.0
                    if (m == 1 and -1e-35 <= x <= 1e-35) or (m == 2 and np.isnan(x)):
                        go_left = default_left[node]
                    else:
                        go_left = x <= threshold[node]
                child = left[node] if go_left else right[node]
                ce = expected[child] if child >= 0 else leaf_value[-1 - child]
                credit[i, f] += ce - e
                e = ce
                node = child
            s += e
        raw[i] = s
    return raw, credit


_walk_parallel = numba.njit(parallel=True, cache=True, nogil=True)(_walk_trees_py)
# few rows (the API): no thread pool to start, and safe to call from many threads at once
_walk_serial = numba.njit(nogil=True)(_walk_trees_py)  # (a second cached copy would clash)


def _top_k_grouped_py(credit, group, k):
    """Each row's k reasons, each from a feature group not yet used while one has credit.

    Greedy by |credit|: the j-th pick is the largest non-zero |credit| among the features of
    groups none of the first j-1 picks belongs to; when no such feature has credit, the
    largest |credit| among the features not yet picked, whatever their group (ties: lower
    index first, as `top_k`)."""
    n, f = credit.shape
    out = np.empty((n, k), dtype=np.int32)
    for i in numba.prange(n):
        for j in range(k):
            best = -1
            best_abs = 0.0  # a new group's feature needs a non-zero credit
            fallback = -1
            fallback_abs = -1.0
            for c in range(f):
                taken = False
                used = False
                for q in range(j):
                    if out[i, q] == c:
                        taken = True
                        break
                    if group[out[i, q]] == group[c]:
                        used = True
                if taken:
                    continue
                a = abs(credit[i, c])
                if a > fallback_abs:
                    fallback_abs = a
                    fallback = c
                if not used and a > best_abs:
                    best_abs = a
                    best = c
            out[i, j] = best if best >= 0 else fallback
    return out


_top_k_grouped_parallel = numba.njit(parallel=True, cache=True, nogil=True)(_top_k_grouped_py)
_top_k_grouped_serial = numba.njit(nogil=True)(_top_k_grouped_py)


def top_k_grouped(credit: np.ndarray, group: np.ndarray, k: int = 3) -> np.ndarray:
    """Column indices of each row's k reasons, largest |credit| first, each from a feature
    group (`group`: an integer code per column) the earlier ones do not come from, as long
    as another group has a non-zero credit; then the largest remaining, whatever the group.

    The first is always the largest |credit| (`top_k`'s first); the second the largest among
    the other groups', the third among the groups neither takes."""
    k = min(k, credit.shape[1])
    group = np.ascontiguousarray(group, dtype=np.int32)
    if group.shape != (credit.shape[1],):
        raise ValueError(f"expected a group for each of {credit.shape[1]} columns")
    pick = _top_k_grouped_parallel if len(credit) >= PARALLEL_ROWS else _top_k_grouped_serial
    return pick(np.ascontiguousarray(credit), group, k)


def top_k(credit: np.ndarray, k: int = 3) -> np.ndarray:
    """Column indices of each row's k largest credits in absolute value, largest first (ties:
    lower index first): `top_k_grouped` with every column a group of its own."""
    return top_k_grouped(credit, np.arange(credit.shape[1]), k)


def agreement(top_fast: np.ndarray, top_exact: np.ndarray) -> dict[str, float]:
    """How often two explanations agree: the same first reason, and the mean share of the
    top-k features both name (order ignored)."""
    k = top_fast.shape[1]
    same_first = float(np.mean(top_fast[:, 0] == top_exact[:, 0]))
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_fast, top_exact, strict=True)])
    return {"top1_match": same_first, f"top{k}_overlap": float(overlap)}

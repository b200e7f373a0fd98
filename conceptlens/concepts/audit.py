"""Audit any decision-maker (a model, a reader, a dataset's labels) through concepts."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets

from conceptlens.concepts._inputs import as_finite_matrix, resolve_concepts
from conceptlens.concepts._stats import benjamini_hochberg, rank_association, wilson_interval
from conceptlens.concepts.audit_result import AuditResult
from conceptlens.concepts.reliance import (
    RELIANCE_TESTS,
    group_likelihood_ratio_tests,
    likelihood_ratio_tests,
    standardize,
)
from conceptlens.concepts.sparse import SparseLinearBottleneck

__all__ = ["audit"]


def _labels(values: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries but the scores have {n} samples")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite values")
    try:
        check_classification_targets(arr)
    except ValueError as exc:
        raise ValueError(f"{name} must be class labels: {exc}") from exc
    return arr


def _association_table(X, decisions, outputs, ids, names) -> pd.DataFrame:
    frames = []
    for c in outputs:
        r = rank_association(X, decisions == c)
        frames.append(pd.DataFrame({"class": [c] * len(ids), "concept": ids,
                                    "name": [names.get(i, i) for i in ids], **r}))
    table = pd.concat(frames, ignore_index=True)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy())
    order = np.argsort(-np.abs(table["effect_size"].fillna(0).to_numpy()), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def _fit_surrogate(X, decisions, ids, test_size, max_concepts, random_state, n_jobs=None):
    frame = pd.DataFrame(X, columns=ids)
    _, counts = np.unique(decisions, return_counts=True)
    can_split = 0 < test_size < 1 and counts.min() >= 2 and len(decisions) >= 10
    surrogate = SparseLinearBottleneck(max_concepts=max_concepts, cv=3, random_state=random_state,
                                       n_jobs=n_jobs)
    rows = []
    if can_split:
        tr, te = train_test_split(np.arange(len(decisions)), test_size=test_size,
                                  stratify=decisions, random_state=random_state)
        splits = [("train", tr), ("held_out", te)]
    else:
        tr = np.arange(len(decisions))
        splits = [("train", tr)]
    surrogate.fit(frame.iloc[tr], decisions[tr])
    for split, idx in splits:
        pred = surrogate.predict(frame.iloc[idx])
        agree = int(np.sum(pred == decisions[idx]))
        lo, hi = wilson_interval(agree, len(idx))
        _, cnt = np.unique(decisions[idx], return_counts=True)
        rows.append({
            "split": split, "n": len(idx), "fidelity": agree / len(idx),
            "ci_low": float(lo), "ci_high": float(hi),
            "majority_baseline": cnt.max() / len(idx),
            "kappa": float(cohen_kappa_score(decisions[idx], pred)),
        })
    return surrogate, pd.DataFrame(rows)


def _reliance_table(surrogate, frame, association, ids, names, marks) -> pd.DataFrame:
    imp = surrogate.global_importance(frame)
    strength = association.assign(abs_effect=association["effect_size"].abs()).groupby(
        "concept", sort=False
    ).agg(max_abs_effect=("abs_effect", "max"), min_q_value=("q_value", "min"))
    table = pd.DataFrame({"concept": ids, "name": [names.get(i, i) for i in ids],
                          "marked": [marks.get(i, "") for i in ids]})
    table["importance"] = imp["total"].reindex(ids).to_numpy()
    table["share"] = imp["share"].reindex(ids).to_numpy()
    table["max_abs_effect"] = strength["max_abs_effect"].reindex(ids).to_numpy()
    table["min_q_value"] = strength["min_q_value"].reindex(ids).to_numpy()
    table = table.sort_values(["importance", "max_abs_effect"], ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def _one_hot(values: np.ndarray) -> np.ndarray:
    """``(n, k - 1)`` indicators of all but the first of the ``k`` distinct values."""
    levels = np.unique(values)
    return np.column_stack([values == v for v in levels[1:]]).astype(float)


def _test_rows(test, targets, Z, ids, names, marks, covariates, l2, n_jobs=None) -> pd.DataFrame:
    frames = []
    for c, y in targets:
        r = likelihood_ratio_tests(Z, y.astype(float), covariates=covariates, l2=l2,
                                   n_jobs=n_jobs)
        frames.append(pd.DataFrame({
            "test": test, "class": [c] * len(ids), "concept": ids,
            "name": [names.get(i, i) for i in ids], "marked": [marks.get(i, "") for i in ids],
            "effect": r["effect"], "statistic": r["statistic"], "df": 1, "p_value": r["p_value"],
        }))
    table = pd.concat(frames, ignore_index=True)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy())
    return table


def _reliance_tests(X, dec, lab, outputs, ids, names, marks, l2, n_jobs=None) -> pd.DataFrame:
    """Conditional likelihood-ratio tests of every concept, per class (one-vs-rest)."""
    Z = standardize(X)
    tables = [_test_rows("conditional", [(c, dec == c) for c in outputs], Z, ids, names, marks,
                         None, l2, n_jobs)]
    if lab is not None and len(np.unique(lab)) > 1:
        tables.append(_test_rows("beyond_labels", [(c, dec == c) for c in outputs], Z, ids,
                                 names, marks, _one_hot(lab), l2, n_jobs))
        tables.append(_test_rows("label_conditional", [(c, lab == c) for c in outputs], Z, ids,
                                 names, marks, None, l2, n_jobs))
    table = pd.concat(tables, ignore_index=True)
    table.insert(1, "model", table["test"].map(RELIANCE_TESTS))
    return table


def _strongest(tests: pd.DataFrame, test: str, ids: list[Any]) -> pd.DataFrame:
    """Per concept, the class row of ``test`` with the smallest p-value (NaN when absent)."""
    rows = tests[tests["test"] == test]
    if rows.empty:
        return pd.DataFrame(index=pd.Index(ids, name="concept"),
                            columns=["class", "effect", "statistic", "p_value", "q_value"],
                            dtype=float)
    best = rows.sort_values("p_value", kind="stable").drop_duplicates("concept")
    return best.set_index("concept")[["class", "effect", "statistic", "p_value", "q_value"]].reindex(ids)


def _spurious_table(reliance, tests, primary, alpha, relied, associated) -> pd.DataFrame:
    """Irrelevant concepts: flagged on the ``primary`` conditional test only."""
    spurious = reliance[reliance["marked"] == "irrelevant"].copy()
    ids = list(spurious["concept"])
    main = _strongest(tests, primary, ids)
    label = _strongest(tests, "label_conditional", ids)
    for col in ("class", "effect", "statistic", "p_value", "q_value"):
        spurious[col] = main[col].to_numpy()
    spurious.insert(spurious.columns.get_loc("class"), "test", primary)
    spurious["flagged"] = (spurious["q_value"] < alpha).to_numpy()
    spurious["label_effect"] = label["effect"].to_numpy()
    spurious["label_q_value"] = label["q_value"].to_numpy()
    spurious["confounded_with_labels"] = (label["q_value"] < alpha).to_numpy()
    spurious["reason"] = [
        _reason(row, primary, relied[i], associated[i], row["conditional_q_value"], alpha)
        for i, row in spurious.iterrows()
    ]
    return spurious


def _reason(row: pd.Series, primary: str, relied: bool, associated: bool,
            conditional_q: float, alpha: float) -> str:
    what = "beyond what the labels explain" if primary == "beyond_labels" else (
        "given the other concepts")
    evidence = (f"{primary} likelihood-ratio test, class {row['class']}: "
                f"chi2={row['statistic']:.3g}, p={row['p_value']:.2g}, q={row['q_value']:.2g}")
    if row["flagged"]:
        return f"decisions depend on it {what} ({evidence})"
    notes = [f"not used {what} ({evidence})"]
    if row["confounded_with_labels"]:
        notes.append(f"confounded with the labels in this data (label_conditional q="
                     f"{row['label_q_value']:.2g})")
    if primary == "beyond_labels" and conditional_q < alpha:
        notes.append(f"predicts the decisions given the other concepts (conditional q="
                     f"{conditional_q:.2g}) but not beyond the labels")
    elif associated:
        notes.append("marginally associated with decisions only (leakage from other concepts?)")
    if relied:
        notes.append("the surrogate uses it, but the conditional test does not confirm it")
    return "; ".join(notes)


def _error_table(X, decisions, labels, outputs, ids, names) -> pd.DataFrame:
    frames = []
    for c in outputs:
        pred_c, true_c = decisions == c, labels == c
        for kind, err, ref in (("false_positive", pred_c & ~true_c, ~pred_c & ~true_c),
                               ("false_negative", ~pred_c & true_c, pred_c & true_c)):
            if err.sum() == 0 or ref.sum() == 0:
                continue
            sub = err | ref
            r = rank_association(X[sub], err[sub])
            frames.append(pd.DataFrame({
                "error_type": kind, "class": [c] * len(ids), "concept": ids,
                "name": [names.get(i, i) for i in ids], "n_error": int(err.sum()),
                "n_reference": int(ref.sum()), **r,
            }))
    if not frames:
        return pd.DataFrame(columns=["error_type", "class", "concept", "name", "n_error",
                                     "n_reference", "auc", "effect_size", "mean_diff",
                                     "p_value", "q_value"])
    table = pd.concat(frames, ignore_index=True)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy())
    return table.sort_values(["p_value", "effect_size"], key=lambda s: s if s.name == "p_value"
                             else -s.abs(), kind="stable").reset_index(drop=True)


def _slice_table(X, correct, ids, names, candidates, quantiles, min_size, n_slices) -> pd.DataFrame:
    lo_q, hi_q = quantiles
    lo, hi = np.quantile(X, lo_q, axis=0), np.quantile(X, hi_q, axis=0)
    conds, masks = [], []
    for j, cid in enumerate(ids):
        label = names.get(cid, cid)
        conds.append((cid, f"{label} high", j))
        masks.append(X[:, j] >= hi[j])
        conds.append((cid, f"{label} low", j))
        masks.append(X[:, j] <= lo[j])
    M = np.column_stack(masks).astype(float)
    ok = correct.astype(float)
    rows = []
    size1, good1 = M.sum(axis=0), (M * ok[:, None]).sum(axis=0)
    for a in range(M.shape[1]):
        rows.append((conds[a][1], conds[a][0], "", size1[a], good1[a]))
    cand_cols = [a for a in range(M.shape[1]) if conds[a][2] in set(candidates)]
    if cand_cols:
        Mc = M[:, cand_cols]
        sizes = Mc.T @ Mc
        goods = Mc.T @ (Mc * ok[:, None])
        for u, v in itertools.combinations(range(len(cand_cols)), 2):
            a, b = cand_cols[u], cand_cols[v]
            if conds[a][2] == conds[b][2]:
                continue
            rows.append((f"{conds[a][1]} & {conds[b][1]}", conds[a][0], conds[b][0],
                         sizes[u, v], goods[u, v]))
    table = pd.DataFrame(rows, columns=["slice", "concept_1", "concept_2", "size", "n_correct"])
    table = table[table["size"] >= min_size].copy()
    table["size"] = table["size"].astype(int)
    table["n_correct"] = table["n_correct"].astype(int)
    table["accuracy"] = table["n_correct"] / table["size"]
    lo_ci, hi_ci = wilson_interval(table["n_correct"].to_numpy(), table["size"].to_numpy())
    table["ci_low"], table["ci_high"] = lo_ci, hi_ci
    table["accuracy_gap"] = table["accuracy"] - float(np.mean(correct))
    table = table.sort_values(["ci_high", "accuracy", "size"], ascending=[True, True, False],
                              kind="stable")
    return table.head(n_slices).reset_index(drop=True)


def audit(
    scores: Any,
    decisions: Any,
    labels: Any = None,
    *,
    expected_concepts: Iterable[Any] | None = None,
    irrelevant_concepts: Iterable[Any] | None = None,
    positive_class: Any = None,
    test_size: float = 0.3,
    max_concepts: int | None = None,
    alpha: float = 0.05,
    min_reliance: float = 0.05,
    min_effect: float = 0.2,
    slice_quantiles: tuple[float, float] = (1 / 3, 2 / 3),
    n_slice_concepts: int = 15,
    min_slice_size: int = 20,
    n_slices: int = 20,
    l2: float = 1.0,
    random_state: int | None = 0,
    concept_groups: Any = None,
    n_jobs: int | None = None,
) -> AuditResult:
    """Explain and check a decision-maker's decisions through concept scores.

    Args:
        scores: ``(n_samples, n_concepts)`` concept scores (``ConceptScores``, DataFrame, array).
        decisions: ``(n_samples,)`` labels the audited model (or reader) gave.
        labels: ``(n_samples,)`` true labels, if known (enables error and slice analysis).
        expected_concepts: Concepts (ids or names) a clinician expects the decision to use.
        irrelevant_concepts: Concepts that should NOT matter for the task (e.g. a ruler, a
            scanner marker, skin tone for a lesion-type decision). One is flagged only when a
            conditional test finds the decisions depend on it (see ``spurious`` below), never
            on marginal association: a concept score that leaks other concepts is associated
            with any decision those concepts drive.
        positive_class: For two classes, the class whose associations are reported
            (default: the larger label, scikit-learn's ``classes_[1]``).
        test_size: Fraction of samples held out to measure the surrogate's fidelity.
        max_concepts: Sparsity limit of the surrogate (per class).
        alpha: FDR level for ``q_value`` significance (flags use ``q < alpha``).
        min_reliance: Importance share above which a concept counts as relied upon.
        min_effect: Absolute rank-biserial effect above which a significant association counts.
        slice_quantiles: Score quantiles below/above which a concept is "low"/"high".
        n_slice_concepts: Two-concept slices are built from this many most associated concepts.
        min_slice_size: Smallest slice reported.
        n_slices: Number of worst slices reported.
        l2: Ridge penalty of the logistic models of the conditional tests (on standardised
            scores, in log-likelihood units; keeps separable or collinear data finite).
        random_state: Seed of the held-out split and the surrogate.
        concept_groups: Concept groups whose reliance counts as one concept (e.g. the one-hot
            columns of one finding): a ``ConceptVocabulary`` (each concept's ``group``), or a
            mapping concept id -> group name. Concepts without a group stand alone. An
            expected concept whose group is relied upon (summed ``share`` >= ``min_reliance``)
            or whose group passes the drop-group test is not reported unused.
        n_jobs: Parallel fits (joblib threads, ``None``: 1, ``-1``: all cores): the
            surrogate's cross-validation folds and the reduced models of the likelihood-ratio
            tests, which are independent of each other. The result does not depend on it.

    Returns:
        :class:`AuditResult`. Tables and columns:

        * ``association``: ``class, concept, name, auc, effect_size`` (rank-biserial, positive:
          higher score among samples given ``class``), ``mean_diff, p_value`` (Mann-Whitney),
          ``q_value`` (Benjamini-Hochberg over all rows); one-vs-rest per class (binary: the
          positive class only); sorted by ``|effect_size|``.
        * ``surrogate_fidelity``: ``split, n, fidelity, ci_low, ci_high`` (Wilson 95 %),
          ``majority_baseline, kappa``; the surrogate is a :class:`SparseLinearBottleneck`
          fitted to the decisions on the training split.
        * ``reliance``: ``rank, concept, name, marked, importance`` (surrogate's mean absolute
          contribution, summed over classes), ``share, max_abs_effect, min_q_value`` (marginal
          association), ``conditional_effect, conditional_q_value`` (the ``conditional`` test's
          row with the smallest p over classes).
        * ``reliance_tests``: ``test, model, class, concept, name, marked, effect`` (log-odds
          per standard deviation of the score, in the larger model), ``statistic`` (likelihood
          ratio, chi-squared with ``df`` = 1), ``p_value, q_value`` (Benjamini-Hochberg within
          each test, over classes x concepts); one row per test, class (one-vs-rest; binary:
          the positive class) and concept. Tests (all ridge-penalised logistic models on
          standardised scores): ``conditional``: does the concept predict the decisions given
          every other concept; with labels also ``beyond_labels``: given every other concept
          *and the labels* (the decisions use it beyond what the labels justify) and
          ``label_conditional``: does it predict the labels given the other concepts (it is
          confounded with the labels in this data).
        * ``spurious``: the ``reliance`` rows of irrelevant concepts plus the flagging test's
          row with the smallest p over classes (``test`` = ``beyond_labels`` when labels are
          given, else ``conditional``; ``class, effect, statistic, p_value, q_value``),
          ``flagged`` (``q_value < alpha``), ``label_effect, label_q_value,
          confounded_with_labels`` (NaN / False without labels) and ``reason`` (the evidence,
          or why a marginal association was not flagged).
        * ``unused_expected``: expected concepts plus ``group, group_share, group_q_value``
          and ``unused`` (neither the concept nor its group relied on by the surrogate, nor
          associated, nor significant in the ``conditional`` or the drop-group test).
        * ``group_reliance`` (with ``concept_groups``; one row per group of two or more
          concepts among the columns): ``group, concepts, n_concepts, importance, share``
          (sums over members), ``relied`` (``share >= min_reliance``) and the drop-group
          likelihood-ratio test of the decisions given every concept outside the group
          (``class, statistic, df, p_value, q_value``: the class row with the smallest p;
          q is Benjamini-Hochberg over groups x classes).
        * ``errors``: ``error_type`` (false_positive: predicted ``class`` wrongly, compared with
          true negatives; false_negative: missed ``class``, compared with true positives),
          ``class, concept, name, n_error, n_reference, auc, effect_size, mean_diff, p_value,
          q_value``.
        * ``slices``: ``slice, concept_1, concept_2, size, n_correct, accuracy, ci_low,
          ci_high, accuracy_gap``; worst first by the Wilson upper bound (a slice is listed
          high only when it is bad with confidence, not merely small).

    Raises:
        ValueError: Mismatched lengths, NaN / infinite scores, a single decision class.
        UnknownConceptError: An expected / irrelevant concept is not a column of ``scores``.
    """
    X, ids, prov = as_finite_matrix(scores, name="scores")
    names = prov.concept_names
    n = len(X)
    dec = _labels(decisions, n, "decisions")
    lab = _labels(labels, n, "labels") if labels is not None else None
    if lab is not None and np.result_type(dec.dtype, lab.dtype).kind == "O":
        dec, lab = dec.astype(object), lab.astype(object)
    dec_classes = np.unique(dec)
    if len(dec_classes) < 2:
        raise ValueError(
            f"decisions contain only one class ({dec_classes[0]!r}); nothing to explain"
        )
    irrelevant = resolve_concepts(irrelevant_concepts, ids, names, what="irrelevant concept")
    expected = resolve_concepts(expected_concepts, ids, names, what="expected concept")
    overlap = set(irrelevant) & set(expected)
    if overlap:
        raise ValueError(
            f"concepts {[ids[j] for j in sorted(overlap)]} are marked both expected and irrelevant"
        )
    marks = {ids[j]: "irrelevant" for j in irrelevant} | {ids[j]: "expected" for j in expected}

    classes = np.unique(np.concatenate([dec, lab])) if lab is not None else dec_classes
    if len(dec_classes) == 2:
        pos = dec_classes[1] if positive_class is None else positive_class
        if pos not in list(dec_classes):
            raise ValueError(f"positive_class {pos!r} is not among the decisions {list(dec_classes)}")
        outputs = [pos]
    else:
        outputs = list(dec_classes)

    association = _association_table(X, dec, outputs, ids, names)
    surrogate, fidelity = _fit_surrogate(X, dec, ids, test_size, max_concepts, random_state,
                                         n_jobs)
    frame = pd.DataFrame(X, columns=ids)
    reliance = _reliance_table(surrogate, frame, association, ids, names, marks)

    tests = _reliance_tests(X, dec, lab, outputs, ids, names, marks, l2, n_jobs)
    primary = "beyond_labels" if (tests["test"] == "beyond_labels").any() else "conditional"
    conditional = _strongest(tests, "conditional", ids)
    reliance["conditional_effect"] = conditional["effect"].reindex(reliance["concept"]).to_numpy()
    reliance["conditional_q_value"] = conditional["q_value"].reindex(reliance["concept"]).to_numpy()

    relied = (reliance["share"] >= min_reliance).to_numpy()
    associated = ((reliance["min_q_value"] < alpha)
                  & (reliance["max_abs_effect"] >= min_effect)).to_numpy()
    used = (reliance["conditional_q_value"] < alpha).to_numpy()
    spurious = _spurious_table(reliance, tests, primary, alpha, relied, associated)
    group_of = _concept_groups(concept_groups, ids)
    if group_of:
        reliance.insert(reliance.columns.get_loc("marked"), "group",
                        [group_of.get(c, "") for c in reliance["concept"]])
    groups = _group_table(reliance, X, dec, outputs, ids, group_of, min_reliance, l2, n_jobs)
    unused = reliance[reliance["marked"] == "expected"].copy()
    group_used = np.zeros(len(unused), dtype=bool)
    if group_of:
        by_group = groups.set_index("group")
        g_share = np.array([by_group["share"].get(g, np.nan) if g else np.nan
                            for g in unused["group"]], dtype=float)
        g_q = np.array([by_group["q_value"].get(g, np.nan) if g else np.nan
                        for g in unused["group"]], dtype=float)
        unused["group_share"] = g_share
        unused["group_q_value"] = g_q
        group_used = (np.nan_to_num(g_share) >= min_reliance) | (np.nan_to_num(g_q, nan=1.0) < alpha)
    unused["unused"] = ~(relied | associated | used)[unused.index] & ~group_used

    errors = pd.DataFrame()
    slices = pd.DataFrame()
    accuracy = None
    if lab is not None:
        correct = dec == lab
        accuracy = float(np.mean(correct))
        err_outputs = outputs if len(classes) == 2 else list(classes)
        errors = _error_table(X, dec, lab, err_outputs, ids, names)
        top = association.drop_duplicates("concept")["concept"].head(n_slice_concepts)
        candidates = [ids.index(c) for c in top]
        slices = _slice_table(X, correct, ids, names, candidates, slice_quantiles,
                              min_slice_size, n_slices)

    held = fidelity[fidelity["split"] == "held_out"]
    summary: dict[str, Any] = {
        "n_samples": n,
        "n_concepts": len(ids),
        "classes": [c.item() if hasattr(c, "item") else c for c in classes],
        "decision_accuracy": accuracy,
        "fidelity": float(held["fidelity"].iloc[0]) if len(held) else float("nan"),
        "fidelity_ci": (
            [float(held["ci_low"].iloc[0]), float(held["ci_high"].iloc[0])] if len(held) else None
        ),
        "surrogate_concepts": int((np.abs(surrogate.coef_) > 0).any(axis=0).sum()),
        "n_flagged_spurious": int(spurious["flagged"].sum()),
        "spurious_test": primary,
        "flagged_spurious": [str(c) for c in spurious.loc[spurious["flagged"], "concept"]],
        "n_confounded_with_labels": int(spurious["confounded_with_labels"].sum()),
        "n_unused_expected": int(unused["unused"].sum()),
        "vocabulary_hash": prov.vocabulary_hash,
    }
    coefs = surrogate.coef_frame(standardized=True)
    coefs.index = pd.Index([str(c) for c in coefs.index], name="class")
    return AuditResult(
        summary=summary,
        reliance=reliance,
        spurious=spurious.reset_index(drop=True),
        unused_expected=unused.reset_index(drop=True),
        association=association,
        surrogate_fidelity=fidelity,
        surrogate_coefficients=coefs,
        errors=errors,
        slices=slices,
        reliance_tests=tests,
        surrogate=surrogate,
        group_reliance=groups,
    )


def _concept_groups(concept_groups: Any, ids: list[str]) -> dict[str, str]:
    """Concept id -> group name, from a vocabulary (``Concept.group``) or a mapping."""
    if concept_groups is None:
        return {}
    if isinstance(concept_groups, Mapping):
        return {str(k): str(v) for k, v in concept_groups.items() if v not in (None, "")}
    members = getattr(concept_groups, "concepts", concept_groups)
    out = {}
    for concept in members:
        cid, group = getattr(concept, "id", None), getattr(concept, "group", "")
        if cid is None:
            raise TypeError("concept_groups must be a ConceptVocabulary or a mapping "
                            "concept id -> group name")
        if group:
            out[str(cid)] = str(group)
    return {c: g for c, g in out.items() if c in ids}


def _group_table(reliance, X, dec, outputs, ids, group_of, min_reliance, l2,
                 n_jobs=None) -> pd.DataFrame:
    """Reliance and drop-group tests per group of two or more concepts."""
    members: dict[str, list[int]] = {}
    for j, c in enumerate(ids):
        if group_of.get(c):
            members.setdefault(group_of[c], []).append(j)
    members = {g: m for g, m in members.items() if len(m) >= 2}
    columns = ["group", "concepts", "n_concepts", "importance", "share", "relied", "class",
               "statistic", "df", "p_value", "q_value"]
    if not members:
        return pd.DataFrame(columns=columns)
    Z = standardize(X)
    names, lists = list(members), list(members.values())
    rows = []
    for c in outputs:
        r = group_likelihood_ratio_tests(Z, (dec == c).astype(float), lists, l2=l2,
                                         n_jobs=n_jobs)
        for i, g in enumerate(names):
            rows.append({"group": g, "class": c, "statistic": r["statistic"][i],
                         "df": int(r["df"][i]), "p_value": r["p_value"][i]})
    tests = pd.DataFrame(rows)
    tests["q_value"] = benjamini_hochberg(tests["p_value"].to_numpy())
    best = tests.sort_values("p_value", kind="stable").drop_duplicates("group").set_index("group")
    by_concept = reliance.set_index("concept")
    table = pd.DataFrame({
        "group": names,
        "concepts": [[ids[j] for j in m] for m in lists],
        "n_concepts": [len(m) for m in lists],
        "importance": [float(by_concept.loc[[ids[j] for j in m], "importance"].sum()) for m in lists],
        "share": [float(by_concept.loc[[ids[j] for j in m], "share"].sum()) for m in lists],
    })
    table["relied"] = table["share"] >= min_reliance
    for col in ("class", "statistic", "df", "p_value", "q_value"):
        table[col] = best[col].reindex(names).to_numpy()
    return table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)

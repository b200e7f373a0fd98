"""Sparse linear concept bottleneck: L1 / elastic-net logistic regression over a path."""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from conceptlens.concepts._solvers import LogisticState, fit_logistic
from conceptlens.concepts.base import ConceptBottleneckBase
from conceptlens.errors import ConceptlensWarning

__all__ = ["EmptyModelWarning", "SparseLinearBottleneck"]

_PATH_SPAN = 1e3  # the automatic grid spans this factor above the smallest useful C
_MAX_BISECTIONS = 40  # refinements of C looking for exactly max_concepts concepts
_MIN_GAIN = 1e-3  # relative CV improvement that resets the patience counter
_SOLVERS = ("newton-cd", "saga")
_SMALL_PROBLEM = 1_000_000  # score values up to which a fit uses one BLAS thread
_FINAL_TOL = 1e-2  # the kept (full-data) models stop at tol * this; the CV folds at tol


class _SagaFit:
    """scikit-learn's SAGA behind the interface of :class:`LogisticState` (warm starts)."""

    def __init__(self, lr: LogisticRegression) -> None:
        self.lr = lr
        self.n_iter = 0
        self.converged = True

    @property
    def coef(self) -> np.ndarray:
        return self.lr.coef_

    @property
    def intercept(self) -> np.ndarray:
        return self.lr.intercept_

    def set(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.lr.coef_, self.lr.intercept_ = coef.copy(), intercept.copy()


def _set_weights(st: LogisticState | _SagaFit, coef: np.ndarray, intercept: np.ndarray) -> None:
    if isinstance(st, _SagaFit):
        st.set(coef, intercept)
    else:
        st.coef, st.intercept = coef.copy(), intercept.copy()


class EmptyModelWarning(ConceptlensWarning):
    """The selected bottleneck uses no concept at all (intercept only: it predicts the same
    class for every image), although a model with concepts was available."""


class SparseLinearBottleneck(ConceptBottleneckBase):
    """Multinomial (or binary) logistic regression on standardised concept scores, sparse.

    The model is fitted along a regularisation path of ``C`` values (strong to weak penalty,
    each fit warm-started from the previous one; the full data and the ``cv`` folds walk the
    path together, their fits at one ``C`` in parallel threads with ``n_jobs``). The default
    solver (``"newton-cd"``) is a proximal-Newton method with coordinate descent on the
    working set; it minimises the objective of scikit-learn's
    ``LogisticRegression(C=C, l1_ratio=l1_ratio)``, so it converges to the same model as
    ``solver="saga"``, in far fewer passes over the data (measured in
    ``benchmarks/bench_bottleneck.py --vs-sklearn``). Fits on up to a million score values,
    or in parallel with ``n_jobs``, use one BLAS thread each (on small matrices more threads
    only oversubscribe the cores); larger fits leave BLAS's threads as they are.

    Selection rule:

    * ``max_concepts=k``: the path stops at the first penalty whose model exceeds ``k``
      concepts (weaker penalties only add concepts, and they are the slowest fits); if the
      grid jumped over ``k``, ``C`` is bisected (in log scale) between the last model below
      ``k`` and the first above until a model with exactly ``k`` is found and added to the
      path. Among the admissible models (at most ``k`` per class), the selected one is the
      richest whose cross-validated score is within one standard error of the best (the
      budget was stated: fewer concepts are taken only when they are clearly better); without
      ``cv``, the least regularised admissible one. So ``max_concepts=k`` gives exactly ``k``
      concepts whenever some penalty does and more concepts do not clearly hurt.
    * ``max_concepts=None``: the best cross-validated model (ties: the sparser); the path
      stops once the mean validation score has not improved for ``patience`` penalties.
    * Never silently empty: when the best model is the intercept-only one, the best model
      with concepts within one standard error of it is taken instead; if there is none, the
      intercept-only model is kept and :class:`EmptyModelWarning` says so.

    Args:
        Cs: Number of ``C`` values (log-spaced from the smallest ``C`` whose model is all zero,
            over three decades) or an explicit sequence of positive ``C`` values.
        l1_ratio: 1 for a pure L1 penalty, in ``(0, 1)`` for elastic net.
        max_concepts: Keep only models with at most this many non-zero weights per class
            (binary: in the single decision function). ``None``: no limit.
        cv: Number of stratified folds used to score each ``C`` (capped by the smallest class
            count); ``None`` or ``1`` selects the least regularised admissible model.
        scoring: ``"log_loss"`` (lower is better) or ``"accuracy"``; ties go to the sparser model.
        class_weight: ``None``, ``"balanced"`` or a mapping class -> weight.
        standardize: Standardise each concept score before fitting (recommended: the penalty
            then treats all concepts alike).
        max_iter: Maximum iterations per fit: Newton iterations (``"newton-cd"``) or SAGA
            epochs (``"saga"``).
        tol: Stopping tolerance. ``"newton-cd"``: the largest violation of the optimality
            conditions divided by the total sample weight; the cross-validation folds stop at
            ``tol``, the full-data models (the ones kept) at ``tol / 100``. ``"saga"``:
            scikit-learn's tolerance, for every fit.
        random_state: Seed for SAGA and the fold split.
        input_transform: Transform of the scores before the linear read-out: ``"identity"``
            or ``"logit"`` (log-odds; for probabilities, e.g. ``calibration="sigmoid"``
            scores). Applied in ``fit`` and in everything that reads scores afterwards, and
            saved with the model.
        patience: Without ``max_concepts``: stop the path once the mean cross-validated
            score has not improved for this many penalties (``None``: the whole grid).
        n_jobs: Threads for the fits of one penalty (full data and folds); ``None``: 1.
            The selected model does not depend on it. ``"newton-cd"`` gains less from
            threads than ``"saga"`` (its coordinate sweeps hold the GIL; its matrix products
            do not).
        solver: ``"newton-cd"`` (default) or ``"saga"`` (scikit-learn's ``LogisticRegression``
            with warm starts): the same objective, so the same model up to the tolerance.

    Attributes:
        coef_: ``(n_outputs, n_concepts)`` weights in ORIGINAL score units, so that
            ``decision_function(X) == X @ coef_.T + intercept_``; ``coef_frame(standardized=True)``
            gives the weights per standard deviation (what the penalty saw).
        intercept_: ``(n_outputs,)`` intercepts in original units.
        C_: The selected ``C``.
        Cs_: ``(n_Cs,)`` the path's ``C`` values, increasing (truncated where the path stopped).
        coef_path_: ``(n_Cs, n_outputs, n_concepts)`` standardised weights along the path.
        intercept_path_: ``(n_Cs, n_outputs)`` standardised-space intercepts along the path.
        cv_scores_: ``(n_Cs, n_folds)`` validation scores (empty without ``cv``).
        best_index_: Index of the selected ``C`` in ``Cs_``.
        n_iter_: Solver iterations of the selected fit (Newton iterations or SAGA epochs).

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 6)); y = (X[:, 0] - X[:, 2] > 0).astype(int)
        >>> model = SparseLinearBottleneck(max_concepts=2, cv=3).fit(X, y)
        >>> sorted(np.flatnonzero(model.coef_[0]).tolist())
        [0, 2]
    """

    _array_attributes = ("Cs_", "coef_path_", "intercept_path_", "cv_scores_", "n_concepts_path_")
    _json_attributes = ("C_", "best_index_", "n_iter_")

    def __init__(
        self,
        Cs: int | Any = 20,
        *,
        l1_ratio: float = 1.0,
        max_concepts: int | None = None,
        cv: int | None = 5,
        scoring: str = "log_loss",
        class_weight: Any = None,
        standardize: bool = True,
        max_iter: int = 100,
        tol: float = 1e-4,
        random_state: int | None = 0,
        input_transform: str = "identity",
        patience: int | None = 4,
        n_jobs: int | None = None,
        solver: str = "newton-cd",
    ) -> None:
        self.Cs = Cs
        self.l1_ratio = l1_ratio
        self.max_concepts = max_concepts
        self.cv = cv
        self.scoring = scoring
        self.class_weight = class_weight
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.input_transform = input_transform
        self.patience = patience
        self.n_jobs = n_jobs
        self.solver = solver

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        if not isinstance(self.l1_ratio, Real) or not 0 < float(self.l1_ratio) <= 1:
            raise ValueError(f"l1_ratio must be in (0, 1], got {self.l1_ratio!r}")
        if self.max_concepts is not None and (
            not isinstance(self.max_concepts, Integral) or self.max_concepts < 0
        ):
            raise ValueError(f"max_concepts must be None or an integer >= 0, got {self.max_concepts!r}")
        if self.cv is not None and (not isinstance(self.cv, Integral) or self.cv < 1):
            raise ValueError(f"cv must be None or an integer >= 1, got {self.cv!r}")
        if self.patience is not None and (not isinstance(self.patience, Integral)
                                          or self.patience < 1):
            raise ValueError(f"patience must be None or an integer >= 1, got {self.patience!r}")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        if not isinstance(self.max_iter, Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if not isinstance(self.tol, Real) or not float(self.tol) > 0:
            raise ValueError(f"tol must be a positive float, got {self.tol!r}")
        if self.scoring not in ("log_loss", "accuracy"):
            raise ValueError(f"scoring must be 'log_loss' or 'accuracy', got {self.scoring!r}")
        if isinstance(self.Cs, Integral):
            if self.Cs < 1:
                raise ValueError(f"Cs must be >= 1, got {self.Cs}")
        else:
            cs = np.asarray(self.Cs, dtype=float)
            if cs.ndim != 1 or len(cs) == 0 or not np.all(np.isfinite(cs)) or np.any(cs <= 0):
                raise ValueError(f"Cs must be an int or a 1-D sequence of positive floats, got {self.Cs!r}")

    # ------------------------------------------------------------------ path
    def _grid(self, Z: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
        if not isinstance(self.Cs, Integral):
            return np.sort(np.asarray(self.Cs, dtype=float))
        n_classes = len(self.classes_)
        if n_classes == 2:
            target = (y == 1).astype(float)[:, None]
        else:
            target = np.eye(n_classes)[y]
        prior = np.average(target, axis=0, weights=weights)
        grad = Z.T @ (weights[:, None] * (target - prior[None, :]))
        # The all-zero model is optimal iff C * max|gradient of the loss at 0| <= l1_ratio.
        g = float(np.abs(grad).max())
        c_min = float(self.l1_ratio) / g if g > 0 else 1.0
        # Start just inside the all-zero region: exactly at c_min the solution is degenerate
        # (weights ~1e-14) and SAGA's relative stopping rule then needs hundreds of epochs.
        c_min *= 0.99
        return np.geomspace(c_min, c_min * _PATH_SPAN, int(self.Cs))

    def _solver(self, C: float) -> LogisticState | _SagaFit:
        """A fresh fit state (the all-zero model) for the configured solver."""
        if self.solver == "saga":
            return _SagaFit(LogisticRegression(
                C=float(C), l1_ratio=float(self.l1_ratio), solver="saga", warm_start=True,
                class_weight=self._class_weight_encoded(), max_iter=self.max_iter, tol=self.tol,
                random_state=self.random_state,
            ))
        n_classes = len(self.classes_)
        return LogisticState.zeros(1 if n_classes == 2 else n_classes, self.n_features_in_)

    def _fit_at(self, st: LogisticState | _SagaFit, Z: np.ndarray, y: np.ndarray,
                C: float, final: bool = True) -> int:
        """Fit ``st`` at ``C`` (warm-started from whatever it holds); 1 if it stopped at
        ``max_iter``. ``final``: a model that is kept (full data), fitted ``_FINAL_TOL`` times
        tighter than a cross-validation fold's. Thread-safe: no warning filters are touched
        here (the caller silences scikit-learn's ConvergenceWarning and reports one summary)."""
        if isinstance(st, _SagaFit):
            st.lr.set_params(C=float(C))
            st.lr.fit(Z, y)
            st.n_iter = int(np.max(st.lr.n_iter_))
            return int(st.n_iter >= self.max_iter)
        cw = self._class_weight_encoded()
        weights = compute_sample_weight(cw, y) if cw is not None else None
        tol = float(self.tol) * (_FINAL_TOL if final else 1.0)
        fit_logistic(Z, y, len(self.classes_), C, float(self.l1_ratio), st,
                     sample_weight=weights, tol=tol, max_iter=self.max_iter)
        return int(not st.converged)

    def _refine_to_k(
        self, Z: np.ndarray, y: np.ndarray, Cs: np.ndarray, coefs: np.ndarray,
        ints: np.ndarray, n_iters: list[int],
    ) -> tuple:
        """Bisect (in log C) between the last model with fewer than ``max_concepts`` concepts
        and the first with more, until a model with exactly ``max_concepts`` is found; add it
        to the path. Returns the (possibly extended) path and the unconverged-fit count."""
        k = self.max_concepts
        n = (coefs != 0).sum(axis=2).max(axis=1)
        if k is None or k == 0 or n[-1] <= k:
            return Cs, coefs, ints, n_iters, 0
        # the gap where the path first exceeds k (the path stopped there)
        hi_i = int(np.flatnonzero(n > k)[0])
        if hi_i == 0 or n[hi_i - 1] == k:
            return Cs, coefs, ints, n_iters, 0
        lo_i = hi_i - 1
        lo, hi = float(Cs[lo_i]), float(Cs[hi_i])
        lo_state = (coefs[lo_i].copy(), ints[lo_i].copy())
        st = self._solver(lo)
        bad = 0
        found = None
        for _ in range(_MAX_BISECTIONS):
            if hi / lo < 1.0 + 1e-9:
                break
            mid = float(np.sqrt(lo * hi))
            _set_weights(st, lo_state[0], lo_state[1])
            bad += self._fit_at(st, Z, y, mid)
            m = int((st.coef != 0).sum(axis=1).max())
            if m == k:
                found = (mid, st.coef.copy(), st.intercept.copy(), st.n_iter)
                break
            if m < k:
                lo, lo_state = mid, (st.coef.copy(), st.intercept.copy())
            else:
                hi = mid
        if found is None:
            return Cs, coefs, ints, n_iters, bad
        c, coef, intercept, it = found
        at = lo_i + 1  # between the two bracketing grid points
        Cs = np.insert(Cs, at, c)
        coefs = np.insert(coefs, at, coef, axis=0)
        ints = np.insert(ints, at, intercept, axis=0)
        n_iters = n_iters[:at] + [it] + n_iters[at:]
        return Cs, coefs, ints, n_iters, bad

    def _class_weight_encoded(self) -> Any:
        if self.class_weight is None or isinstance(self.class_weight, str):
            return self.class_weight
        labels = [c.item() if hasattr(c, "item") else c for c in self.classes_]
        unknown = [k for k in self.class_weight if k not in labels]
        if unknown:
            raise ValueError(f"class_weight names unknown classes {unknown}; classes are {labels}")
        return {i: float(self.class_weight.get(c, 1.0)) for i, c in enumerate(labels)}

    def _score(self, coef: np.ndarray, intercept: np.ndarray, Z: np.ndarray, y: np.ndarray) -> float:
        d = Z @ coef.T + intercept[None, :]
        if self.scoring == "accuracy":
            pred = (d[:, 0] > 0).astype(int) if d.shape[1] == 1 else np.argmax(d, axis=1)
            return float(np.mean(pred == y))
        if d.shape[1] == 1:
            p1 = np.clip(expit(d[:, 0]), 1e-15, 1 - 1e-15)
            return -float(np.mean(np.where(y == 1, np.log(p1), np.log1p(-p1))))
        p = np.clip(softmax(d, axis=1)[np.arange(len(y)), y], 1e-15, None)
        return -float(np.mean(np.log(p)))

    def _cv_folds(self, X: np.ndarray, y: np.ndarray) -> list[tuple | None]:
        """Standardised ``(Z_train, y_train, Z_val, y_val)`` per fold (``None``: a fold whose
        training part lacks a class); empty when cross-validation is off or impossible."""
        if self.cv is None or self.cv < 2:
            return []
        counts = np.bincount(y)
        n_splits = min(int(self.cv), int(counts.min()))
        if n_splits < 2:
            warnings.warn(
                f"cv={self.cv} impossible: the smallest class has {counts.min()} sample(s); "
                "selecting the least regularised admissible model instead",
                UserWarning, stacklevel=4,
            )
            return []
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
        out: list[tuple | None] = []
        for tr, va in folds.split(X, y):
            if len(np.unique(y[tr])) < len(self.classes_):
                out.append(None)
                continue
            mean, scale = self._stats(X[tr])
            out.append(((X[tr] - mean) / scale, y[tr], (X[va] - mean) / scale, y[va]))
        return out

    def _joint_path(
        self, Cs: np.ndarray, full: tuple | None, folds: list[tuple | None],
        stop_above: int | None, early_stop: bool,
    ) -> dict[str, Any]:
        """Walk the penalties once, fitting the full data (``full = (Z, y)``, optional) and
        every fold at each ``C``, each warm-started from its previous ``C``; the fits of one
        ``C`` run in parallel threads with ``n_jobs`` (SAGA releases the GIL; ``newton-cd``
        releases it in its matrix products, not in its coordinate sweeps).

        Stops after the ``C`` whose full-data model exceeds ``stop_above`` concepts, or (with
        ``early_stop``) once the mean validation score has not improved for ``patience``
        penalties. Returns the full path, the ``(n_done, n_folds)`` validation scores and the
        count of fits stopped by ``max_iter``.
        """
        jobs: list[tuple[np.ndarray, np.ndarray]] = []
        if full is not None:
            jobs.append(full)
        live = [f for f in folds if f is not None]
        jobs.extend((f[0], f[1]) for f in live)
        solvers = [self._solver(Cs[0]) for _ in jobs]
        final = [full is not None and i == 0 for i in range(len(jobs))]
        parallel = None
        if self.n_jobs not in (None, 1) and len(jobs) > 1:
            from joblib import Parallel, delayed

            parallel = Parallel(n_jobs=self.n_jobs, prefer="threads")
        coefs, ints, n_iters, scores = [], [], [], []
        n_bad, best, best_i = 0, np.inf, 0
        sign = 1.0 if self.scoring == "log_loss" else -1.0
        for i, c in enumerate(Cs):
            if parallel is not None:
                bad = parallel(delayed(self._fit_at)(st, Z, y, c, fin)
                               for st, (Z, y), fin in zip(solvers, jobs, final, strict=True))
            else:
                bad = [self._fit_at(st, Z, y, c, fin)
                       for st, (Z, y), fin in zip(solvers, jobs, final, strict=True)]
            n_bad += sum(bad)
            fold_solvers = solvers[1:] if full is not None else solvers
            row, k = [], 0
            for f in folds:
                if f is None:
                    row.append(np.nan)
                    continue
                st = fold_solvers[k]
                k += 1
                row.append(self._score(st.coef, st.intercept, f[2], f[3]))
            scores.append(row)
            if full is not None:
                st = solvers[0]
                coefs.append(st.coef.copy())
                ints.append(st.intercept.copy())
                n_iters.append(int(st.n_iter))
                if stop_above is not None and (st.coef != 0).sum(axis=1).max() > stop_above:
                    break
            if early_stop and live and self.patience is not None:
                mean = sign * float(np.nanmean(row))
                if i == 0 or mean < best - _MIN_GAIN * abs(best):
                    best, best_i = mean, i
                elif i - best_i >= self.patience:
                    break
        return {
            "coefs": np.stack(coefs) if coefs else None,
            "ints": np.stack(ints) if ints else None,
            "n_iters": n_iters,
            "scores": np.asarray(scores, dtype=float).reshape(len(scores), len(folds)),
            "n_bad": n_bad,
        }

    def _stats(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.standardize:
            return np.zeros(X.shape[1]), np.ones(X.shape[1])
        mean, scale = X.mean(axis=0), X.std(axis=0)
        scale[scale < 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
        return mean, scale

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any) -> SparseLinearBottleneck:
        """Fit the regularisation path and select a model.

        Args:
            X: ``(n_samples, n_concepts)`` concept scores (``ConceptScores``, DataFrame, array).
            y: ``(n_samples,)`` class labels (at least two classes).

        Returns:
            self
        """
        self._check_params()
        X_arr, y_enc = self._validate_fit_data(X, y)
        self._set_standardisation(X_arr)
        if not self.standardize:
            self.mean_, self.scale_ = self._stats(X_arr)
        Z = (X_arr - self.mean_) / self.scale_
        cw = self._class_weight_encoded()
        weights = compute_sample_weight(cw, y_enc) if cw is not None else np.ones(len(y_enc))
        Cs = self._grid(Z, y_enc, weights)
        # small dense products: one BLAS thread each (parallelism comes from n_jobs; several
        # BLAS threads per fold only oversubscribe the cores on these sizes)
        small = Z.size <= _SMALL_PROBLEM or self.n_jobs not in (None, 1)
        limits = threadpool_limits(limits=1, user_api="blas") if small else nullcontext()
        with warnings.catch_warnings(), limits:
            warnings.simplefilter("ignore", ConvergenceWarning)  # one summary below
            folds = self._cv_folds(X_arr, y_enc)
            if self.max_concepts is None:
                # one joint walk: full data and folds together, stopped by the CV curve
                walk = self._joint_path(Cs, (Z, y_enc), folds, None, early_stop=True)
                coefs, ints, n_iters = walk["coefs"], walk["ints"], walk["n_iters"]
                Cs, cv_scores, n_bad = Cs[: len(coefs)], walk["scores"], walk["n_bad"]
            else:
                # the budget decides where the path ends: full data first (stops past k),
                # then exactly k by bisection, then the folds on the final penalties
                walk = self._joint_path(Cs, (Z, y_enc), [], self.max_concepts, early_stop=False)
                coefs, ints, n_iters, n_bad = (walk["coefs"], walk["ints"], walk["n_iters"],
                                               walk["n_bad"])
                Cs = Cs[: len(coefs)]
                Cs, coefs, ints, n_iters, n_bad_k = self._refine_to_k(
                    Z, y_enc, Cs, coefs, ints, n_iters)
                n_bad += n_bad_k
                cv_scores = np.empty((len(Cs), 0))
                if folds:
                    walk = self._joint_path(Cs, None, folds, None, early_stop=False)
                    cv_scores, n_bad = walk["scores"], n_bad + walk["n_bad"]
        if cv_scores.shape[1] and np.all(np.isnan(cv_scores)):
            cv_scores = np.empty((len(Cs), 0))
        if n_bad:
            warnings.warn(
                f"{n_bad} of the path's {self.solver} fits did not converge in max_iter="
                f"{self.max_iter} iterations; raise max_iter or tol", ConvergenceWarning,
                stacklevel=2,
            )
        n_concepts = (np.abs(coefs) > 0).sum(axis=2).max(axis=1)
        best = self._select(n_concepts, cv_scores)

        self.Cs_ = Cs
        self.coef_path_ = coefs
        self.intercept_path_ = ints
        self.cv_scores_ = cv_scores
        self.n_concepts_path_ = n_concepts
        self.best_index_ = int(best)
        self.C_ = float(Cs[best])
        self.n_iter_ = int(n_iters[best])
        self._restore_after_load()
        return self

    def _select(self, n_concepts: np.ndarray, cv_scores: np.ndarray) -> int:
        admissible = np.ones(len(n_concepts), dtype=bool)
        if self.max_concepts is not None:
            admissible = n_concepts <= self.max_concepts
        if not admissible.any():
            raise ValueError(
                f"no model on the path has at most {self.max_concepts} concepts per class "
                f"(sparsest has {int(n_concepts.min())}); pass smaller Cs"
            )
        candidates = np.flatnonzero(admissible)
        if cv_scores.shape[1] == 0 or np.all(np.isnan(cv_scores)):
            pick = int(candidates[-1])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(cv_scores, axis=1)
                n_ok = np.sum(~np.isnan(cv_scores), axis=1)
                se = np.nanstd(cv_scores, axis=1, ddof=1) / np.sqrt(np.maximum(n_ok, 1))
            se = np.nan_to_num(se)
            sign = 1.0 if self.scoring == "log_loss" else -1.0  # minimise sign * score
            key = sign * mean[candidates]
            best = int(np.flatnonzero(key <= np.nanmin(key) + 1e-12)[0])  # ties: sparsest
            within = candidates[key <= key[best] + se[candidates[best]] + 1e-12]
            if self.max_concepts is not None:
                # the budget was stated: the richest model within one SE of the best
                pick = int(within[np.argmax(n_concepts[within])])
            else:
                pick = int(candidates[best])
                nonempty = within[n_concepts[within] > 0]
                if n_concepts[pick] == 0 and len(nonempty):
                    # never the intercept-only model while a model with concepts ties with it
                    order = np.argsort(sign * mean[nonempty], kind="stable")
                    pick = int(nonempty[order[0]])
        if n_concepts[pick] == 0 and self.max_concepts != 0:
            has_concepts = bool(np.any(n_concepts[candidates] > 0))
            warnings.warn(
                "the selected bottleneck uses no concept (intercept only: the same prediction "
                "for every image): "
                + ("models with concepts were worse than it by more than one standard error "
                   "in cross-validation" if has_concepts else
                   "no admissible model on the path has a non-zero weight")
                + "; see path_, pass cv=None or larger Cs",
                EmptyModelWarning, stacklevel=3,
            )
        return pick

    def _restore_after_load(self) -> None:
        beta = self.coef_path_[self.best_index_]
        b0 = self.intercept_path_[self.best_index_]
        self.coef_ = beta / self.scale_[None, :]
        self.intercept_ = b0 - self.coef_ @ self.mean_

    # ------------------------------------------------------------------ reporting
    @property
    def path_(self) -> pd.DataFrame:
        """One row per ``C`` on the path: ``C``, ``max_concepts_per_class``, ``n_concepts``
        (union over classes), ``cv_score`` / ``cv_score_std`` and ``selected``."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        union = (np.abs(self.coef_path_) > 0).any(axis=1).sum(axis=1)
        has_cv = self.cv_scores_.shape[1] > 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(self.cv_scores_, axis=1) if has_cv else np.full(len(self.Cs_), np.nan)
            std = np.nanstd(self.cv_scores_, axis=1) if has_cv else np.full(len(self.Cs_), np.nan)
        return pd.DataFrame(
            {
                "C": self.Cs_,
                "max_concepts_per_class": self.n_concepts_path_,
                "n_concepts": union,
                "cv_score": mean,
                "cv_score_std": std,
                "selected": np.arange(len(self.Cs_)) == self.best_index_,
            }
        )

"""Two-sample classifier test: can a neural network tell generated showers from reference ones?

As in the CaloChallenge (arXiv:2410.21611, ``code/evaluate.py``, "classifier metric"): a
fully connected network is trained with binary cross-entropy to separate the two samples, and
the ROC AUC on a held-out test split is the score: 0.5 means the samples are indistinguishable
to this classifier, 1.0 that they are fully separable. Two input sets are used:

- low-level: log10(E_inc / MeV) and the voxel energies divided by E_inc (:func:`low_level_inputs`);
- high-level: log10(E_inc), E_tot/E_inc, per layer log10(E_layer/E_inc + 1e-8), centres and widths
  in x, y, r (in cm) (:func:`high_level_inputs`, from :func:`fastsim.metrics.shapes.shower_features`).

Details fixed here: classes are balanced by subsampling the larger one; each class is split
train/validation/test (60/20/20 by default: ``int(0.6 n)``, ``int(0.2 n)`` and the rest, as the
official ``ttv_split``) with ``numpy.random.default_rng(seed)``. The validation split selects the
epoch and calibrates the output; the test split scores. (The official code names these two
"test" and "val".) Two settings exist:

- :class:`ClassifierConfig` defaults ("quick", fastsim's own, for tests and training callbacks):
  3 × 256 units, LeakyReLU(0.2), dropout 0.2, inputs standardised with the training split's mean
  and standard deviation, float32, training stopped when the validation loss has not improved for
  ``patience`` epochs, keeping the best weights; the AUC is that of the raw output.
- :data:`CALOCHALLENGE`, the official ``evaluate.py`` classifier (``DNN`` with ``cls_n_layer=2``
  extra hidden layers, i.e. three hidden layers of 2048, LeakyReLU with its default slope 0.01,
  no dropout; raw inputs; float64, the official default dtype; Adam lr 2e-4, batch 1000, 50 epochs,
  keeping the epoch with the best *accuracy* on the validation split and stopping early only at
  accuracy 1; ``IsotonicRegression(y_min=1e-6, y_max=1-1e-6)`` fitted on the validation split; AUC
  and JSD of the *calibrated* output on the test split).

In both, the output is calibrated on the validation split with isotonic regression before the
JSD-like score is computed: JSD ≈ ln 2 − BCE_test (nats), reported divided by ln 2 so that it lies
in [0, 1] (0 = indistinguishable). The AUC uncertainty is the Hanley–McNeil (Radiology 143 (1982)
29) standard error.

torch is imported inside the functions; the global torch RNG is left untouched (a forked RNG is
seeded with ``seed``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["CALOCHALLENGE", "ClassifierConfig", "classifier_test", "high_level_inputs", "low_level_inputs"]


@dataclass
class ClassifierConfig:
    """Network and training settings of the classifier test.

    The defaults (3 × 256 hidden units, batch 256, at most 30 epochs, patience 4) finish in a
    few minutes on 2 CPU cores for 10⁴ showers per class of dataset 1 (368 voxels). The official
    CaloChallenge settings are :data:`CALOCHALLENGE`.

    Attributes (beyond the obvious): ``patience`` epochs without improvement stop the training
    (None: never, all ``max_epochs`` run); ``select_on`` "loss" keeps the epoch of the lowest
    validation BCE, "accuracy" that of the highest validation accuracy (stopping at 1.0);
    ``standardize`` the inputs with the training split's mean and std; ``dtype`` "float32" or
    "float64"; ``score_calibrated``: the AUC of the calibrated output (official) instead of the raw
    one; ``calib_eps``: the isotonic calibration's output is kept in [eps, 1 − eps].
    """

    hidden: tuple[int, ...] = (256, 256, 256)
    dropout: float = 0.2
    lr: float = 5e-4
    batch_size: int = 256
    max_epochs: int = 30
    patience: int | None = 4
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    max_per_class: int | None = None
    seed: int = 0
    calibrate: bool = True
    leaky_slope: float = 0.2
    select_on: str = "loss"
    standardize: bool = True
    dtype: str = "float32"
    score_calibrated: bool = False
    calib_eps: float = 0.0


#: The official CaloChallenge classifier (``code/evaluate.py`` defaults; module docstring).
CALOCHALLENGE = ClassifierConfig(
    hidden=(2048, 2048, 2048), dropout=0.0, lr=2e-4, batch_size=1000, max_epochs=50, patience=None,
    val_fraction=0.2, test_fraction=0.2, leaky_slope=0.01, select_on="accuracy", standardize=False,
    dtype="float64", score_calibrated=True, calib_eps=1e-6,
)  # fmt: skip


def low_level_inputs(showers: ArrayLike, e_inc: ArrayLike) -> np.ndarray:
    """Low-level classifier input: [log10(E_inc / MeV), voxels / E_inc].

    Args:
        showers: shape (N, V), MeV.
        e_inc: shape (N,), MeV, > 0.

    Returns:
        float32 array of shape (N, V + 1).
    """
    s = np.asarray(showers, dtype=np.float64)
    e = np.asarray(e_inc, dtype=np.float64).ravel()
    return np.concatenate([np.log10(e)[:, None], s / e[:, None]], axis=1).astype(np.float32)


def high_level_inputs(features: dict[str, np.ndarray]) -> np.ndarray:
    """High-level classifier input from :func:`fastsim.metrics.shapes.shower_features` output.

    Columns: log10(E_inc/MeV), E_tot/E_inc, log10(E_layer/E_inc + 1e-8) per layer, then per layer
    centre_x, centre_y, centre_r, width_x, width_y, width_r in cm (mm / 10: keeps them O(1)).

    Returns:
        float32 array of shape (N, 2 + 7 × n_layers).
    """
    e = np.asarray(features["e_inc"], dtype=np.float64)
    cols = [np.log10(e)[:, None], (np.asarray(features["e_tot"]) / e)[:, None]]
    cols.append(np.log10(np.asarray(features["e_layer"]) / e[:, None] + 1e-8))
    for key in ("center_x", "center_y", "center_r", "width_x", "width_y", "width_r"):
        cols.append(np.asarray(features[key]) / 10.0)
    return np.concatenate(cols, axis=1).astype(np.float32)


def _auc_unc(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley–McNeil standard error of a ROC AUC."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def classifier_test(
    generated: ArrayLike,
    reference: ArrayLike,
    config: ClassifierConfig | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a classifier to separate ``generated`` from ``reference`` rows; score on a test split.

    Args:
        generated: classifier inputs of the generated showers, shape (N_gen, F) (e.g. from
            :func:`low_level_inputs` or :func:`high_level_inputs`).
        reference: the same for the reference showers, shape (N_ref, F).
        config: settings; keyword ``overrides`` replace single fields (e.g. ``max_epochs=3``).

    Returns:
        dict with ``auc`` (test ROC AUC, label 1 = generated; of the calibrated output when
        ``score_calibrated``), ``auc_raw`` (of the raw output), ``auc_unc`` (Hanley–McNeil),
        ``jsd`` (calibrated JSD-like score in [0, 1]), ``bce_test``, ``n_per_class``, ``n_train``,
        ``n_val``, ``n_test``, ``n_features``, ``epochs``, ``best_epoch``, ``train_seconds`` and
        ``config`` (the settings used).
    """
    import torch
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score

    cfg = config or ClassifierConfig()
    if overrides:
        cfg = ClassifierConfig(**{**asdict(cfg), **overrides})
    if cfg.select_on not in ("loss", "accuracy"):
        raise ValueError(f"select_on must be 'loss' or 'accuracy', got {cfg.select_on!r}")
    if cfg.dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {cfg.dtype!r}")
    g = np.asarray(generated, dtype=np.float32)
    r = np.asarray(reference, dtype=np.float32)
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1]:
        raise ValueError(f"inputs must be 2-D with the same number of columns, got {g.shape} and {r.shape}")
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(r))):
        raise ValueError("classifier inputs contain NaN/inf")
    rng = np.random.default_rng(cfg.seed)
    n = min(len(g), len(r))
    if cfg.max_per_class is not None:
        n = min(n, int(cfg.max_per_class))
    if n < 10:
        raise ValueError(f"need at least 10 showers per class, got {n}")
    # balance the classes: a classifier that learns the class prior would inflate nothing in
    # the AUC but would bias the BCE-based JSD
    sel_g = np.sort(rng.permutation(len(g))[:n])
    sel_r = np.sort(rng.permutation(len(r))[:n])
    # one (2n, F) array, standardised in place: dataset 3 has 40 501 columns, so every copy counts
    x = np.empty((2 * n, g.shape[1]), dtype=np.float32)
    np.take(g, sel_g, axis=0, out=x[:n])
    np.take(r, sel_r, axis=0, out=x[n:])
    y = np.concatenate([np.ones(n, np.float32), np.zeros(n, np.float32)])
    # per class, as the official ttv_split: int(train n), int(val n) rows, the rest for the test
    n_tr_c = int((1.0 - cfg.val_fraction - cfg.test_fraction) * n)
    n_va_c = max(1, int(cfg.val_fraction * n))
    if n_tr_c < 1 or n - n_tr_c - n_va_c < 1:
        raise ValueError("too few showers left for training after the validation and test splits")
    splits: list[list[np.ndarray]] = [[], [], []]
    for offset in (0, n):
        p = offset + rng.permutation(n)
        for k, part in enumerate((p[:n_tr_c], p[n_tr_c : n_tr_c + n_va_c], p[n_tr_c + n_va_c :])):
            splits[k].append(part)
    i_tr = np.sort(np.concatenate(splits[0]))
    i_va, i_te = (rng.permutation(np.concatenate(s)) for s in splits[1:])
    n_train, n_val = len(i_tr), len(i_va)
    # training-split mean and std, accumulated in float64 row blocks (no copy of the split)
    s1 = np.zeros(x.shape[1])
    s2 = np.zeros(x.shape[1])
    block = max(1, (16 << 20) // (8 * x.shape[1]))  # ~16 MiB of float64 per block
    for lo in range(0, n_train, block):
        blk = x[i_tr[lo : lo + block]].astype(np.float64)
        s1 += blk.sum(axis=0)
        s2 += (blk**2).sum(axis=0)
    mean = s1 / n_train
    std = np.sqrt(np.maximum(s2 / n_train - mean**2, 0.0))
    std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)  # constant columns stay 0
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
    for lo in range(0, 2 * n, block) if cfg.standardize else ():
        x[lo : lo + block] -= mean32
        x[lo : lo + block] /= std32
    ytr, yva, yte = y[i_tr], y[i_va], y[i_te]

    t0 = time.perf_counter()
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        layers: list[torch.nn.Module] = []
        width = x.shape[1]
        for h in cfg.hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.LeakyReLU(cfg.leaky_slope), torch.nn.Dropout(cfg.dropout)]
            width = h
        layers.append(torch.nn.Linear(width, 1))
        net = torch.nn.Sequential(*layers).to(dtype)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        xt = torch.from_numpy(x)  # shares memory with x; batches are cast to ``dtype`` one at a time
        ytr_t = torch.from_numpy(ytr).to(dtype)
        tva, yva_t = xt[torch.from_numpy(i_va)].to(dtype), torch.from_numpy(yva).to(dtype)
        best_score, best_epoch, best_state, epochs = math.inf, -1, None, 0
        for epoch in range(cfg.max_epochs):
            net.train()
            order = torch.from_numpy(rng.permutation(n_train))
            rows = torch.from_numpy(i_tr)[order]
            for lo in range(0, n_train, cfg.batch_size):
                idx = order[lo : lo + cfg.batch_size]
                opt.zero_grad()
                loss = loss_fn(net(xt[rows[lo : lo + cfg.batch_size]].to(dtype)).squeeze(1), ytr_t[idx])
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                logits = net(tva).squeeze(1)
                if cfg.select_on == "loss":
                    score = float(loss_fn(logits, yva_t))
                else:  # minus the accuracy (np.round: an output of exactly 0.5 counts as class 0)
                    score = -float(np.mean(np.round(torch.sigmoid(logits).numpy()) == yva))
            epochs = epoch + 1
            if score < best_score - (1e-5 if cfg.select_on == "loss" else 0.0):
                best_score, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif cfg.patience is not None and epoch - best_epoch >= cfg.patience:
                break
            if cfg.select_on == "accuracy" and best_score == -1.0:
                break
        assert best_state is not None
        net.load_state_dict(best_state)
        net.eval()
        with torch.no_grad():
            p_val = torch.sigmoid(net(tva).squeeze(1)).numpy().astype(np.float64)
            p_test = torch.sigmoid(net(xt[torch.from_numpy(i_te)].to(dtype)).squeeze(1)).numpy().astype(np.float64)
    train_seconds = time.perf_counter() - t0

    auc_raw = float(roc_auc_score(yte, p_test))
    if cfg.calibrate:
        eps = float(cfg.calib_eps)
        iso = IsotonicRegression(y_min=eps, y_max=1.0 - eps, out_of_bounds="clip").fit(p_val, yva)
        p_cal = iso.predict(p_test)
    else:
        p_cal = p_test
    auc = float(roc_auc_score(yte, p_cal)) if cfg.score_calibrated else auc_raw
    p_cal = np.clip(p_cal, 1e-7, 1 - 1e-7)
    bce = float(-np.mean(yte * np.log(p_cal) + (1 - yte) * np.log(1 - p_cal)))
    jsd = float(np.clip((math.log(2) - bce) / math.log(2), 0.0, 1.0))
    n_pos = int(yte.sum())
    return {
        "auc": auc,
        "auc_raw": auc_raw,
        "auc_unc": _auc_unc(auc, n_pos, len(yte) - n_pos),
        "jsd": jsd,
        "bce_test": bce,
        "n_per_class": n,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": int(len(yte)),
        "n_features": int(x.shape[1]),
        "epochs": epochs,
        "best_epoch": best_epoch + 1,
        "train_seconds": train_seconds,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }

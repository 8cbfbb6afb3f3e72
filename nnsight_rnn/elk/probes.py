"""Linear probes for eliciting latent knowledge: logistic regression, LDA, difference of means, CCS.

Every probe is a linear function of standardised features, ``score(x) = ((x - mean) / scale) @ w + b``
(higher = "true"), fitted on one *site* (``"residual"``, ``"state"``, ``"state.<slot>"``, see
:mod:`nnsight_rnn.elk.activations`) of one layer:

- ``"logreg"``: L2-regularised logistic regression (scikit-learn ``LogisticRegression``; default
  ``C = 0.1`` on standardised features: the flattened state has thousands of features for a few
  hundred items).
- ``"lda"``: linear discriminant analysis, pooled within-class covariance with Ledoit-Wolf shrinkage
  (scikit-learn's estimate of the shrinkage), which stays well-posed when features outnumber items
  (the flattened state); solved in item space then (:func:`fit_lda`).
- ``"mean_diff"``: difference of class means in the raw features, ``w = mu_1 - mu_0``, threshold at the
  midpoint (Marks & Tegmark's / Mallen et al.'s "DiffMean").
- ``"ccs"``: contrast-consistent search (Burns et al. 2023), unsupervised, on the contrast pair
  (the prompt followed by the true / the false answer token): each side is centred on its own mean, both are
  divided by one shared scale, and ``p = sigmoid(z @ w + b)`` minimises
  ``(p+ - (1 - p-))^2 + min(p+, p-)^2`` (several random starts, the lowest loss wins; torch, Adam,
  full batch). The item's score is ``(p+ + 1 - p-) / 2``. CCS cannot know which direction is
  "true": its sign is set so that the training AUROC is >= 0.5 (the usual evaluation convention;
  the only use of labels).

Probes are saved with :mod:`nnsight_rnn.artifacts` (safetensors + JSON with the model's fingerprint)
as a :class:`ProbeSet` and refuse to load onto another model; a probe refuses features of another
site or layer (wrong width) and a model whose layer count it does not fit, naming what differs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ProbeMismatchError

METHODS = ("logreg", "lda", "mean_diff", "ccs")
SUPERVISED = ("logreg", "lda", "mean_diff")
ARTIFACT_KIND = "elk_probes"


# ---------------------------------------------------------------------------------------------
# the probe
# ---------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """One fitted linear probe.

    Attributes:
        method: one of :data:`METHODS`.
        site: ``"residual"``, ``"state"`` or ``"state.<slot>"``.
        layer: block index whose activations it reads.
        weight: ``[D]`` weights on standardised features.
        bias: scalar offset.
        mean: ``[D]`` feature mean subtracted first (CCS: the mean of the true side).
        scale: ``[D]`` feature scale divided next (1 where a feature is constant).
        neg_mean: CCS only: ``[D]`` mean of the false side.
        config: hyper-parameters and anything else to record (training subset, dataset hash, ...).
    """

    method: str
    site: str
    layer: int
    weight: torch.Tensor
    bias: float
    mean: torch.Tensor
    scale: torch.Tensor
    neg_mean: torch.Tensor | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.numel())

    @property
    def contrast(self) -> bool:
        """True if the probe reads a contrast pair (CCS) rather than the prompt."""
        return self.neg_mean is not None

    @property
    def key(self) -> str:
        return f"{self.site}/{self.method}/{self.layer}"

    def check(self, features: torch.Tensor, *, layer: int | None = None, site: str | None = None) -> None:
        """Refuse features that cannot be this probe's: another layer / site, or another width."""
        if layer is not None and layer != self.layer:
            raise ProbeMismatchError(
                f"this {self.method} probe was fitted on layer {self.layer} ({self.site}); refusing layer {layer}. "
                f"Collect layer {self.layer}'s activations, or use a probe fitted on layer {layer}."
            )
        if site is not None and site != self.site:
            raise ProbeMismatchError(
                f"this {self.method} probe reads {self.site!r} (layer {self.layer}); refusing {site!r} features"
            )
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ProbeMismatchError(
                f"this {self.method} probe reads {self.site!r} of layer {self.layer}: [N, {self.dim}] features; "
                f"got {list(features.shape)}. Wrong site or layer, or another model?"
            )

    def logits(self, features: torch.Tensor, *, neg_mean: bool = False) -> torch.Tensor:
        """``((x - mean) / scale) @ w + b`` per row, ``[N]`` (``neg_mean``: centre on the CCS false side)."""
        center = self.neg_mean if neg_mean else self.mean
        x = features.float()
        return ((x - center) / self.scale) @ self.weight + self.bias

    def score(
        self,
        features: torch.Tensor,
        negative: torch.Tensor | None = None,
        *,
        layer: int | None = None,
        site: str | None = None,
    ) -> torch.Tensor:
        """Probe score per item, ``[N]``; higher means "true".

        Args:
            features: ``[N, D]`` activations of the prompt (CCS: of the prompt + the true answer token).
            negative: CCS only: ``[N, D]`` activations of the prompt + the false answer token.
            layer / site: where ``features`` come from; a mismatch raises :class:`ProbeMismatchError`.
        """
        self.check(features, layer=layer, site=site)
        if not self.contrast:
            return self.logits(features)
        if negative is None:
            raise ProbeMismatchError("a CCS probe scores contrast pairs: pass the ' False' side as `negative`")
        self.check(negative, layer=layer, site=site)
        p = torch.sigmoid(self.logits(features))
        q = torch.sigmoid(self.logits(negative, neg_mean=True))
        return 0.5 * (p + 1 - q)

    def direction(self) -> torch.Tensor:
        """The probe's direction in raw feature space (``w / scale``, unit norm), ``[D]``."""
        d = self.weight / self.scale
        return d / d.norm().clamp_min(1e-12)


# ---------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------


def standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean [D], scale [D])`` of ``x [N, D]``; scale is the std, or 1 for (near-)constant features."""
    x = x.double()
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    floor = 1e-6 * float(std.max()) if std.numel() else 0.0
    scale = torch.where(std > max(floor, 1e-12), std, torch.ones_like(std))
    return mean.float(), scale.float()


def _labels(y: Sequence[int] | torch.Tensor) -> np.ndarray:
    arr = np.asarray(torch.as_tensor(y).cpu().numpy()).astype(int).ravel()
    if set(np.unique(arr).tolist()) != {0, 1}:
        raise ValueError(f"probe training needs both labels 0 and 1; got {sorted(set(arr.tolist()))}")
    return arr


def _span(z: torch.Tensor) -> torch.Tensor | None:
    """Orthonormal basis ``[D, N]`` of the rows of ``z [N, D]`` when ``D > N`` (else None).

    An L2-penalised linear model fitted on ``z`` has its weights in this span (the penalty only
    grows outside it, the data term does not see it), so fitting on ``z @ Q`` (``N`` columns) and
    mapping back with ``Q`` gives the same solution, much faster for a wide state.
    """
    n, d = z.shape
    if d <= n:
        return None
    q, _ = torch.linalg.qr(z.double().T)
    return q


def fit_logreg(x: torch.Tensor, y: Sequence[int] | torch.Tensor, *, C: float = 0.1, max_iter: int = 2000) -> Probe:
    """Logistic regression on standardised features (scikit-learn, L2, lbfgs; in the data's span when D > N)."""
    from .metrics import require_sklearn

    require_sklearn()
    from sklearn.linear_model import LogisticRegression

    labels = _labels(y)
    mean, scale = standardise(x)
    z = (x.float() - mean) / scale
    q = _span(z)
    feats = (z.double() @ q if q is not None else z.double()).numpy()
    clf = LogisticRegression(C=C, max_iter=max_iter).fit(feats, labels)
    coef = torch.tensor(clf.coef_[0], dtype=torch.float64)
    w = (q @ coef if q is not None else coef).float()
    return Probe("logreg", "", -1, w, float(clf.intercept_[0]), mean, scale,
                 config={"C": C, "max_iter": max_iter, "library": "scikit-learn"})  # fmt: skip


def fit_lda(x: torch.Tensor, y: Sequence[int] | torch.Tensor, *, shrinkage: float | str = "auto") -> Probe:
    """LDA on standardised features with a shrunk pooled within-class covariance.

    ``w = Sigma^-1 (mu_1 - mu_0)``, ``Sigma = (1 - a) S + a (tr S / D) I`` with ``S`` the pooled
    within-class covariance and ``a`` the Ledoit-Wolf shrinkage (scikit-learn's
    ``ledoit_wolf_shrinkage``; or a given number). Solved in the item space (Woodbury) when features
    outnumber items, so a 10^4-wide state costs an ``N x N`` solve. Threshold: the midpoint plus the
    log prior ratio.
    """
    from .metrics import require_sklearn

    require_sklearn()
    from sklearn.covariance import ledoit_wolf_shrinkage

    labels = torch.as_tensor(_labels(y))
    mean, scale = standardise(x)
    z = ((x.float() - mean) / scale).double()
    ones = labels == 1
    m1, m0 = z[ones].mean(0), z[~ones].mean(0)
    zc = z - torch.where(ones[:, None], m1, m0)
    n, d = zc.shape
    alpha = float(ledoit_wolf_shrinkage(zc.numpy(), assume_centered=True)) if shrinkage == "auto" else float(shrinkage)
    c = max(alpha * float((zc**2).sum()) / (n * d), 1e-12)
    u = zc.T * math.sqrt((1 - alpha) / n)  # [D, N]: (1 - a) S = u u^T
    diff = m1 - m0
    if d <= n:
        w = torch.linalg.solve(c * torch.eye(d, dtype=torch.float64) + u @ u.T, diff)
    else:
        w = (diff - u @ torch.linalg.solve(c * torch.eye(n, dtype=torch.float64) + u.T @ u, u.T @ diff)) / c
    n1 = int(ones.sum())
    bias = float(-w @ (m1 + m0) / 2 + math.log(n1 / (n - n1)))
    return Probe("lda", "", -1, w.float(), bias, mean, scale,
                 config={"shrinkage": shrinkage, "alpha": alpha, "covariance": "pooled within-class, Ledoit-Wolf"})  # fmt: skip


def fit_mean_diff(x: torch.Tensor, y: Sequence[int] | torch.Tensor) -> Probe:
    """Difference of class means in raw feature space; threshold at the midpoint of the two means."""
    labels = torch.as_tensor(_labels(y))
    x = x.float()
    mu1, mu0 = x[labels == 1].mean(0), x[labels == 0].mean(0)
    w_raw = mu1 - mu0
    mean, scale = standardise(x)
    # raw score (x - mid) @ w_raw == ((x - mean) / scale) @ (w_raw * scale) + (mean - mid) @ w_raw
    mid = 0.5 * (mu1 + mu0)
    return Probe("mean_diff", "", -1, w_raw * scale, float((mean - mid) @ w_raw), mean, scale, config={})


def fit_ccs(
    pos: torch.Tensor,
    neg: torch.Tensor,
    y: Sequence[int] | torch.Tensor | None = None,
    *,
    n_tries: int = 4,
    epochs: int = 300,
    lr: float = 2e-2,
    weight_decay: float = 0.01,
    seed: int = 0,
) -> Probe:
    """Contrast-consistent search (Burns et al.) on contrast pairs ``pos``/``neg`` ``[N, D]``.

    All ``n_tries`` random starts train at once (one ``[D, n_tries]`` weight matrix, AdamW, full
    batch) in the span of the training pairs (see :func:`_span`); the start with the lowest final
    loss is kept. With labels ``y`` the sign is chosen so
    that the training AUROC is >= 0.5.
    """
    pos, neg = pos.float(), neg.float()
    mp, mn = pos.mean(0), neg.mean(0)
    _, scale = standardise(torch.cat([pos - mp, neg - mn]))
    zp, zn = (pos - mp) / scale, (neg - mn) / scale
    q = _span(torch.cat([zp, zn]))  # the loss only sees this span; fit there, map back
    if q is not None:
        q = q.float()
        zp, zn = zp @ q, zn @ q
    dim = zp.shape[1]
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(dim, n_tries, generator=gen) / math.sqrt(dim)).requires_grad_(True)
    b = torch.zeros(n_tries, requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay)

    def losses() -> torch.Tensor:
        p, q = torch.sigmoid(zp @ w + b), torch.sigmoid(zn @ w + b)
        return ((p - (1 - q)) ** 2).mean(0) + (torch.minimum(p, q) ** 2).mean(0)

    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            losses().sum().backward()
            opt.step()
    with torch.no_grad():
        final = losses()
        best = int(final.argmin())
        w, b = w.detach(), b.detach()
    weight = w[:, best].clone() if q is None else q @ w[:, best]
    probe = Probe("ccs", "", -1, weight, float(b[best].item()), mp, scale, neg_mean=mn,
                  config={"n_tries": n_tries, "epochs": epochs, "lr": lr, "weight_decay": weight_decay, "seed": seed,
                          "loss": float(final[best]), "library": "torch"})  # fmt: skip
    if y is not None:
        from .metrics import auroc

        if auroc(probe.score(pos, neg), y) < 0.5:
            probe.weight, probe.bias = -probe.weight, -probe.bias
            probe.config["sign_flipped"] = True
    return probe


def fit(
    method: str,
    features: torch.Tensor,
    y: Sequence[int] | torch.Tensor,
    *,
    negative: torch.Tensor | None = None,
    site: str = "",
    layer: int = -1,
    **kwargs: Any,
) -> Probe:
    """Fit ``method`` on ``features [N, D]`` with labels ``y`` (CCS: ``features`` = true side, ``negative`` = false)."""
    if method not in METHODS:
        raise ValueError(f"unknown probe method {method!r}; known: {list(METHODS)}")
    if method == "ccs":
        if negative is None:
            raise ValueError("CCS needs contrast pairs: pass the ' False' side as `negative`")
        probe = fit_ccs(features, negative, y, **kwargs)
    elif method == "logreg":
        probe = fit_logreg(features, y, **kwargs)
    elif method == "lda":
        probe = fit_lda(features, y, **kwargs)
    else:
        probe = fit_mean_diff(features, y)
    probe.site, probe.layer = site, layer
    return probe


# ---------------------------------------------------------------------------------------------
# saving: a set of probes for one model
# ---------------------------------------------------------------------------------------------


@dataclass
class ProbeSet:
    """Probes fitted on one model, by ``(site, method, layer)``; saved as one artifact.

    Attributes:
        probes: the probes.
        meta: what they were fitted on (model name, dataset hash, training subset, positions, ...).
    """

    probes: list[Probe] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, probe: Probe) -> None:
        self.probes = [p for p in self.probes if p.key != probe.key] + [probe]

    def keys(self) -> list[tuple[str, str, int]]:
        return [(p.site, p.method, p.layer) for p in self.probes]

    def get(self, method: str, site: str, layer: int) -> Probe:
        """The probe of ``method`` on ``site`` at ``layer``; raises :class:`ProbeMismatchError` listing what exists."""
        for p in self.probes:
            if (p.method, p.site, p.layer) == (method, site, layer):
                return p
        have = sorted({(p.site, p.method) for p in self.probes})
        layers = sorted({p.layer for p in self.probes if (p.site, p.method) == (site, method)})
        hint = f"; {site}/{method} exists for layers {layers}" if layers else f"; the set has {have}"
        raise ProbeMismatchError(f"no {method} probe on {site!r} at layer {layer}{hint}")

    def __iter__(self) -> Iterable[Probe]:
        return iter(self.probes)

    def __len__(self) -> int:
        return len(self.probes)

    def save(self, path: str, model: Any) -> None:
        """Write the set for ``model`` (safetensors + ``artifact.json`` with the model's fingerprint)."""
        from ..artifacts import save_artifact

        tensors: dict[str, torch.Tensor] = {}
        records = []
        for p in self.probes:
            for name in ("weight", "mean", "scale", "neg_mean"):
                value = getattr(p, name)
                if value is not None:
                    tensors[f"{p.key}/{name}"] = value.float()
            records.append({"method": p.method, "site": p.site, "layer": p.layer, "dim": p.dim, "bias": p.bias,
                            "contrast": p.contrast, "config": p.config})  # fmt: skip
        n_layers = len(model.layers) if hasattr(model, "layers") else None
        meta = {**self.meta, "probes": records, "n_layers": n_layers}
        save_artifact(path, ARTIFACT_KIND, tensors, model, meta)

    @classmethod
    def load(cls, path: str, model: Any, *, allow_other_weights: bool = False) -> ProbeSet:
        """Read a set saved by :meth:`save`, refusing another model (architecture, or weights unless allowed)."""
        from ..artifacts import load_artifact

        art = load_artifact(path, model, ARTIFACT_KIND, allow_other_weights=allow_other_weights)
        meta = dict(art.meta)
        records = meta.pop("probes")
        n_layers = meta.get("n_layers")
        if n_layers is not None and hasattr(model, "layers") and len(model.layers) != n_layers:
            raise ProbeMismatchError(f"{path} was fitted on a {n_layers}-layer model; this one has {len(model.layers)}")
        probes = []
        for r in records:
            key = f"{r['site']}/{r['method']}/{r['layer']}"
            t = {k.rsplit("/", 1)[1]: v for k, v in art.tensors.items() if k.rsplit("/", 1)[0] == key}
            probes.append(Probe(r["method"], r["site"], r["layer"], t["weight"], r["bias"], t["mean"], t["scale"],
                                t.get("neg_mean"), r["config"]))  # fmt: skip
        return cls(probes, meta)

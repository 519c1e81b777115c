"""A calibration as search applies it (numpy only, so the query side never imports the fitting code and torch):
the query adapter and correction, the fusion chosen, and how they are stored beside an index."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from indexes.errors import IndexValueError
from pipeline.query.fusion import FusionChoice
from pipeline.vectors import prepare

APPLIED = ("adapter", "bias_weight", "fusion", "dense_weight")  # manifest settings read back; the rest is report


@dataclass
class Calibration:
    """What calibration chose; applied to query vectors at search time and to the hybrid fusion."""

    adapter: np.ndarray | None
    query_mean: np.ndarray
    bias_weight: float
    fusion: FusionChoice
    report: dict = field(default_factory=dict)

    def queries(self, vectors: np.ndarray) -> np.ndarray:
        """Prepared query vectors -> calibrated ones: adapter, then the correction, unit length."""
        out = np.asarray(vectors, dtype=np.float32)
        if self.adapter is not None:
            out = prepare(out + out @ self.adapter, None)
        return prepare(out - self.bias_weight * self.query_mean, None)

    def arrays(self) -> dict[str, np.ndarray]:
        """What is stored beside the index."""
        out = {"query_mean": self.query_mean.astype(np.float32)}
        if self.adapter is not None:
            out["adapter"] = self.adapter.astype(np.float32)
        return out

    def settings(self) -> dict:
        """What is recorded in the manifest (and shown by `htp info`)."""
        return {
            "adapter": self.adapter is not None,
            "bias_weight": self.bias_weight,
            "fusion": self.fusion.method,
            "dense_weight": self.fusion.dense_weight,
            **self.report,
        }

    @classmethod
    def load(cls, settings: dict, arrays: dict[str, np.ndarray]) -> Calibration:
        """Rebuild from a manifest's settings and the stored arrays (whose shapes indexes.parts checked against the
        index), refusing settings and arrays that do not fit together."""
        try:
            adapter = arrays["adapter"] if settings["adapter"] else None
            calibration = cls(
                adapter,
                arrays["query_mean"],
                float(settings["bias_weight"]),
                FusionChoice(settings["fusion"], float(settings["dense_weight"])),
                {k: v for k, v in settings.items() if k not in APPLIED},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise IndexValueError(
                f"the index's calibration is damaged ({type(err).__name__}: {err}): rebuild the index with `htp build`"
            ) from err
        return calibration


def describe(calibration: Calibration) -> str:
    """One line for the build summary: what was chosen, what the development set said, what it cost."""
    r = calibration.report
    adapter = (
        f"adapter yes (dev NDCG@10 {100 * r['dev_ndcg_identity']:.1f} -> {100 * r['dev_ndcg_adapter']:.1f})"
        if calibration.adapter is not None
        else "adapter no (it did not beat the identity on the dev set)"
    )
    best = r.get("dev_best_fusion")
    fusion = calibration.fusion.label + (
        f" (the dev set's best: {best})" if best and best != calibration.fusion.label else ""
    )
    kept = r.get("dev_queries", 0) - r.get("dev_documents_encoded", r.get("dev_queries", 0))
    encoded = f" ({kept} of their documents kept their vector: the edit lay past truncation)" if kept else ""
    return (
        f"{adapter}, query correction {calibration.bias_weight:g}, hybrid fusion {fusion}; "
        f"{r.get('pseudo_queries')} pseudo-queries, {r.get('dev_queries')} inverse-cloze dev queries{encoded}, "
        f"{r.get('seconds')} s"
    )

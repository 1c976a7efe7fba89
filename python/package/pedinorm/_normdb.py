"""Normative databases and deviation maps: ``NormDb``, ``deviation`` and ``volumes``."""

from __future__ import annotations

import json
import os
from typing import Any, Union

from . import _native
from ._image import Image, ImageLike, from_native, native

__all__ = ["NormDb", "Deviation", "Volumes", "deviation", "volumes"]


class NormDb:
    """A normative database (``normdb.h5``) read into memory: its age brackets, each with a
    template, brain mask, atlas labels and tissue priors; the normative model at any age; the
    calibration; and the normals.

    A bracket is named by its name or by an age in years (the bracket a case of that age is
    compared in)."""

    def __init__(self, native_db: Any) -> None:
        self._native = native_db

    @classmethod
    def open(cls, path: Union[str, os.PathLike]) -> "NormDb":
        """Reads ``path``; errors name the file and the field."""
        return cls(_native.NormDb.open(os.fspath(path)))

    @property
    def path(self) -> str:
        """The file the database was read from."""
        return os.fspath(self._native.path)

    @property
    def brackets(self) -> list[dict[str, Any]]:
        """The age brackets: ``name``, ``min_years``, ``max_years``, ``normals``."""
        return self._native.brackets

    def bracket(self, bracket: str | float) -> str:
        """The name of a bracket given by name or by age."""
        if isinstance(bracket, str):
            return bracket
        return self._native.bracket_for_age(float(bracket))

    def template(self, bracket: str | float) -> Image:
        """A bracket's template."""
        return from_native(self._native.template(self.bracket(bracket)))

    def mask(self, bracket: str | float) -> Image:
        """A bracket's brain mask (1 inside), as uint8."""
        return from_native(self._native.mask(self.bracket(bracket)), "uint8")

    def labels(self, bracket: str | float) -> Image | None:
        """A bracket's atlas labels in template space (int16), or None without an atlas."""
        pair = self._native.labels(self.bracket(bracket))
        return None if pair is None else from_native(pair, "int16")

    def priors(self, bracket: str | float) -> dict[str, Image] | None:
        """A bracket's tissue priors ``{"csf", "gm", "wm"}``, or None."""
        maps = self._native.priors(self.bracket(bracket))
        return None if maps is None else {name: from_native(pair) for name, pair in maps.items()}

    @property
    def atlas(self) -> dict[str, Any] | None:
        """``{"name", "source", "labels": {value: name}}``, or None without an atlas."""
        return self._native.atlas

    def model(self, age: float, sex: str | None = None, channel: str = "intensity") -> dict[str, Any]:
        """The normative model of ``channel`` (``intensity`` or ``logjac``) at ``age`` (years)
        for ``sex`` (``"F"``, ``"M"`` or None: both pooled), as scoring uses it: ``mean`` and
        ``sd`` images on the template grid (0 outside the mask), the ``bracket``, the ``sex``
        the model used (None when pooled), ``effective_n`` and ``fraction_floored`` (voxels
        whose SD the floor raised)."""
        out = dict(self._native.model(float(age), sex, channel))
        out["mean"] = from_native(out["mean"])
        out["sd"] = from_native(out["sd"])
        return out

    @property
    def calibration(self) -> dict[str, Any] | None:
        """Thresholds and achieved false-positive rates per channel, site effects and the
        local-volume limit; None when the database was not calibrated."""
        text = self._native.calibration_json
        return None if text is None else json.loads(text)

    @property
    def subjects(self) -> list[dict[str, Any]]:
        """The normals: pseudonym, age, sex, scanner, bracket and QC figures (a list of
        records: ``pandas.DataFrame(db.subjects)``)."""
        return json.loads(self._native.subjects_json)

    def deviation(self, case: ImageLike, age: float, sex: str | None = None, **options: Any) -> "Deviation":
        """See :func:`deviation`."""
        return deviation(self, case, age, sex, **options)

    def volumes(self, image: ImageLike, age: float, sex: str | None = None, **options: Any) -> "Volumes":
        """See :func:`volumes`."""
        return volumes(self, image, age, sex, **options)

    def __repr__(self) -> str:
        return repr(self._native)


class Deviation:
    """A case's deviation result: ``z`` and ``z_native`` (``{"intensity", "logjac"}`` z-maps in
    template space and on the case's grid), ``clusters_map`` and ``clusters_native`` (the
    significant clusters labelled), ``report`` (what ``report.json`` holds), and its tables as
    lists of records (``clusters``, ``regions``, ``thresholds``), each ready for
    ``pandas.DataFrame``; :meth:`table` gives a table as a dict of columns."""

    def __init__(self, native_result: dict[str, Any]) -> None:
        self.report: dict[str, Any] = json.loads(native_result["report"])
        self.z = {name: from_native(pair) for name, pair in native_result["z_template"].items()}
        self.z_native = {name: from_native(pair) for name, pair in native_result["z_native"].items()}
        self.clusters_map = from_native(native_result["clusters_template"], "int16")
        self.clusters_native = from_native(native_result["clusters_native"], "int16")

    @property
    def bracket(self) -> str:
        """The bracket whose template and model were used."""
        return self.report["bracket"]

    @property
    def reliable(self) -> bool:
        """Whether the case lies within what the database's normals represent (when False, no
        map or cluster should be read as a finding: see ``report["reliability"]``)."""
        return bool(self.report["reliability"]["reliable"])

    @property
    def clusters(self) -> list[dict[str, Any]]:
        """Supra-threshold clusters, significant first (label > 0 in ``clusters_map``)."""
        return self.report["clusters"]

    @property
    def regions(self) -> list[dict[str, Any]]:
        """The atlas-region table, most deviant first."""
        return self.report["regions"]

    @property
    def thresholds(self) -> list[dict[str, Any]]:
        """The calibrated thresholds per channel."""
        return self.report["thresholds"]

    @property
    def warnings(self) -> list[str]:
        """Notes for the reader (an unreliable comparison first)."""
        return self.report["warnings"]

    def table(self, name: str) -> dict[str, list[Any]]:
        """``clusters``, ``regions`` or ``thresholds`` as a dict of columns (nested values, such
        as a cluster's peak coordinates, stay lists)."""
        rows = {"clusters": self.clusters, "regions": self.regions, "thresholds": self.thresholds}.get(name)
        if rows is None:
            raise _native.PedinormError(f"table {name!r}: must be clusters, regions or thresholds")
        return _columns(rows)

    def __repr__(self) -> str:
        significant = sum(1 for c in self.clusters if c["label"] > 0)
        return f"Deviation(bracket={self.bracket!r}, significant clusters={significant}, reliable={self.reliable})"


class Volumes:
    """A subject's regional volumes: ``summary`` (what ``volumes.json`` holds), ``measures``
    (name → ml), ``tissues`` (``{"csf", "gm", "wm"}`` probabilities on the image's grid) and
    ``labels`` (atlas labels on the image's grid, or None)."""

    def __init__(self, native_result: dict[str, Any]) -> None:
        self.summary: dict[str, Any] = json.loads(native_result["summary"])
        self.tissues = {name: from_native(pair) for name, pair in native_result["tissues"].items()}
        labels = native_result["labels"]
        self.labels = None if labels is None else from_native(labels, "int16")

    @property
    def measures(self) -> dict[str, float]:
        """Volumes in ml by measure name."""
        return {m["name"]: m["volume_ml"] for m in self.summary["measures"]}

    @property
    def centiles(self) -> list[dict[str, Any]]:
        """Each modelled measure placed on the database's growth-chart centiles (empty without
        centile models)."""
        return self.summary.get("centiles", [])

    def __repr__(self) -> str:
        return f"Volumes(bracket={self.summary['bracket']!r}, measures={len(self.summary['measures'])})"


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return {k: [row.get(k) for row in rows] for k in keys}


def _open(normdb: NormDb | str | os.PathLike) -> NormDb:
    return normdb if isinstance(normdb, NormDb) else NormDb.open(normdb)


def deviation(
    normdb: NormDb | str | os.PathLike,
    case: ImageLike,
    age: float,
    sex: str | None = None,
    *,
    site: str | None = None,
    max_regions: int = 15,
    case_name: str | None = None,
) -> Deviation:
    """The deviation maps of ``case`` (a structural image on its own grid) against ``normdb``
    at ``age`` (years) for ``sex`` (``"F"``, ``"M"`` or None) and scanner ``site``, computed by
    the function ``pedinorm deviation`` runs: the same maps, clusters and region table. The
    GIL is released while it runs."""
    db = _open(normdb)
    if case_name is None:
        case_name = os.fspath(case) if isinstance(case, (str, os.PathLike)) else "case"
    result = db._native.deviation(native(case, case_name), float(age), sex, site, max_regions, case_name)
    return Deviation(result)


def volumes(
    normdb: NormDb | str | os.PathLike,
    image: ImageLike,
    age: float,
    sex: str | None = None,
    *,
    site: str | None = None,
    subject: str = "subject",
) -> Volumes:
    """The regional volumes of ``image`` (a T1w on its own grid) against ``normdb``'s bracket
    for ``age``, measured as ``pedinorm volumes`` measures them (tissue segmentation with the
    bracket's priors, atlas regions pulled onto the subject), with centiles when the database
    has centile models."""
    db = _open(normdb)
    result = db._native.volumes(native(image, subject), float(age), sex, site, subject)
    return Volumes(result)

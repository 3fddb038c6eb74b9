"""`bookpulse model-risk`: a champion's model-risk document (Markdown and HTML), generated from
what its training run and the registry logged, logged to that run (`model-risk/`) and written
under $BOOKPULSE_HOME/reports (or --out). Promotion and rollback write it too
(`adapters.registry`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bookpulse.adapters import registry, risk_doc, tracking
from bookpulse.adapters.report import reports_dir
from bookpulse.specs import SpecError, load_uplift_specs, model_names, spec_named


@dataclass(frozen=True)
class ModelRiskRequest:
    """One scoring model's document: its champion's, or the named registered version's."""

    home: Path
    model: str
    version: str | None = None
    out: Path | None = None  # default: $BOOKPULSE_HOME/reports


@dataclass(frozen=True)
class ModelRiskResult:
    model: str
    version: str
    champion: bool  # the version documented is the champion
    run_id: str
    markdown: Path
    html: Path
    logged: tuple[str, ...]  # the artifact paths in the training run


def _write(path: Path, text: str) -> None:
    """Replace the file whole: a reader never sees half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def model_risk(request: ModelRiskRequest) -> ModelRiskResult:
    """Render the document, log it to the version's training run and write both files."""
    if request.model in load_uplift_specs():
        raise SpecError(
            f"{request.model} is an uplift model; model-risk documents cover the scoring "
            "models (a calibrated probability of an event), not uplift models"
        )
    names = model_names()
    if request.model not in names:
        raise SpecError(f"unknown model {request.model!r}: use one of {', '.join(names)}")
    spec = spec_named(request.model)
    out = Path(request.out) if request.out is not None else reports_dir(request.home)
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out} is a file: give a folder for the .md and .html documents")
    tracking.configure(request.home)
    champion = None
    try:
        champion = risk_doc.champion_version(spec)
    except risk_doc.ModelRiskError:
        if request.version is None:
            raise
    version = str(request.version) if request.version is not None else champion
    doc = risk_doc.log_document(spec, version, registry.history(spec.name))
    md, page = out / f"{doc.stem}.md", out / f"{doc.stem}.html"
    _write(md, doc.markdown)
    _write(page, doc.html)
    return ModelRiskResult(
        model=spec.name,
        version=doc.version,
        champion=doc.version == champion,
        run_id=doc.run_id,
        markdown=md,
        html=page,
        logged=doc.logged,
    )

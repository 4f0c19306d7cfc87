"""The automatic models installed in ``models/``: list them, read their cards, choose the one in use.

A model is a ``.pt`` file there that holds a tumour U-Net (:func:`lungseg.tumour.unet.save_model`); its
card is the ``.md`` beside it (``m.pt`` → ``m.md``, as ``python -m lungseg train`` writes it), or for the
shipped model the first section of ``models/README.md``.  The choice is a small JSON file beside the
database (``LUNGSEG_MODEL_CHOICE`` overrides where); without one the shipped model is used.  Every
cached result and study record is keyed by the model's version (name, meta version and the weights'
content hash), so switching models never serves another model's contours.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lungseg.errors import InputError

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SHIPPED = "lungseg_unet.pt"


@dataclass(frozen=True)
class ModelInfo:
    name: str  # the file name in models/
    path: Path
    version: str  # as TumourPredictor.version: stem-metaversion-hash8
    trained_on: tuple[str, ...]
    size_mb: float
    has_second_stage: bool

    @property
    def card_path(self) -> Path | None:
        own = self.path.with_suffix(".md")
        if own.exists():
            return own
        return self.path.parent / "README.md" if self.name == SHIPPED and (self.path.parent / "README.md").exists() else None


def model_info(path: Path) -> ModelInfo | None:
    """The model at ``path``, or None when the file is not a tumour model (e.g. the click model)."""
    import io

    import torch

    raw = path.read_bytes()
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        meta = payload["meta"]
        if meta["architecture"].get("base_channels") is None or "in_plane_mm" not in meta:
            return None
    except Exception:  # noqa: BLE001 - not a lungseg tumour model
        return None
    version = f"{path.stem}-{meta.get('version', 'dev')}-{hashlib.sha256(raw).hexdigest()[:8]}"
    trained = meta.get("training_cases") or meta.get("training_hosts") or meta.get("hosts") or []
    return ModelInfo(path.name, path, version, tuple(trained), len(raw) / 1e6, "candidate_classifier" in payload)


def list_models(folder: Path | None = None) -> list[ModelInfo]:
    """Every tumour model in ``folder`` (``models/``), the shipped one first."""
    found = [m for p in sorted(Path(folder or MODELS_DIR).glob("*.pt")) if (m := model_info(p)) is not None]
    return sorted(found, key=lambda m: (m.name != SHIPPED, m.name))


def read_card(model: ModelInfo) -> str:
    """The model card's Markdown (the shipped model's: its section of models/README.md)."""
    path = model.card_path
    if path is None:
        return f"No model card beside {model.name}."
    text = path.read_text()
    if path.name == "README.md":
        text = text.split("\n---\n", 1)[0]
    return text


def choice_file() -> Path:
    if os.environ.get("LUNGSEG_MODEL_CHOICE"):
        return Path(os.environ["LUNGSEG_MODEL_CHOICE"])
    from lungseg.study.schema import default_db_path

    return default_db_path().with_name("model_choice.json")


def chosen_model(folder: Path | None = None) -> Path:
    """The weights in use: the chosen model when its file is still there, else the shipped one."""
    folder = folder or MODELS_DIR
    try:
        name = json.loads(choice_file().read_text())["model"]
    except (OSError, ValueError, KeyError, TypeError):
        return Path(folder) / SHIPPED
    path = Path(folder) / Path(name).name
    return path if path.exists() else Path(folder) / SHIPPED


def choose_model(name: str, by: str, folder: Path | None = None) -> ModelInfo:
    """Make ``name`` (a model in ``folder``, ``models/``) the one in use; recorded with who and when."""
    folder = folder or MODELS_DIR
    models = {m.name: m for m in list_models(folder)}
    if name not in models:
        raise InputError(f"{name}: not a tumour model in {folder} ({', '.join(models) or 'none there'})")
    path = choice_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"model": name, "version": models[name].version, "chosen_by": by,
                               "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
    tmp.replace(path)
    return models[name]

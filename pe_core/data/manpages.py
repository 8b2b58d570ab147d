"""NAME line → DESCRIPTION pairs from the manual pages installed on this machine.

Pages are read as roff source (gzip or plain) and stripped of markup with a few regular
expressions; no ``man``/``groff`` process is started, so this costs milliseconds per page and
works where those tools are missing. Only English pages (``man1``..``man8`` directly under a
man root) are read. Machines without man pages simply contribute nothing.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from pe_core.data.text import squash, stable_hash

MAN_ROOTS = (Path("/usr/share/man"), Path("/usr/local/share/man"))

# \fB \fI \fR \fP \f(CW \f[CW]: font changes carry no text
_FONT = re.compile(r"\\f(\(..|\[[^\]]*\]|.)")
# \s-1 \s+2 \s0: size changes
_SIZE = re.compile(r"\\s[+-]?\d")
# \*(xx \*[name] \*x: string interpolations, usually typographic
_STRING = re.compile(r"\\\*(\(..|\[[^\]]*\]|.)")
_NAMED = {
    "em": "-",
    "en": "-",
    "hy": "-",
    "aq": "'",
    "dq": '"',
    "lq": '"',
    "rq": '"',
    "oq": "'",
    "cq": "'",
    "bu": "*",
    "co": "(c)",
    "rg": "(R)",
    "tm": "(TM)",
    "ga": "`",
    "ti": "~",
    "ha": "^",
    "rs": "\\",
    "mi": "-",
    "pl": "+",
    "mu": "x",
}
_CHAR = re.compile(r"\\(\(..|\[[^\]]*\])")
_SIMPLE = {
    "-": "-",
    "e": "\\",
    "&": "",
    ",": "",
    "/": "",
    "%": "",
    " ": " ",
    "~": " ",
    "|": "",
    "^": "",
    "0": " ",
    ":": "",
    "c": "",
    "'": "'",
    "`": "`",
    ".": ".",
}
_ESC = re.compile(r"\\(.)")
# macros that only lay out text: dropped with their arguments
_LAYOUT = frozenset(
    {
        "PP",
        "LP",
        "P",
        "TP",
        "IP",
        "HP",
        "RS",
        "RE",
        "sp",
        "br",
        "nf",
        "fi",
        "ne",
        "in",
        "ti",
        "ad",
        "na",
        "hy",
        "nh",
        "ft",
        "ps",
        "vs",
        "ll",
        "de",
        "ds",
        "nr",
        "so",
        "ie",
        "el",
        "if",
        "TQ",
        "PD",
        "UC",
        "Pp",
        "Bl",
        "El",
        "Bd",
        "Ed",
        "Dd",
        "Dt",
        "Os",
        "It",
        "ig",
        "EX",
        "EE",
        "YS",
        "SY",
        "TH",
        "OP",
        "Ns",
        "Sm",
        "Li",
        "ta",
        "Ss",
        "IX",
        "UN",
    }
)
_PARAGRAPH = frozenset({"PP", "LP", "P", "TP", "IP", "HP", "Pp", "sp", "It", "TQ", "Bl"})


def _unescape(text: str) -> str:
    text = _FONT.sub("", text)
    text = _SIZE.sub("", text)
    text = _STRING.sub("", text)
    text = _CHAR.sub(lambda m: _NAMED.get(m.group(1).strip("([]"), ""), text)
    return _ESC.sub(lambda m: _SIMPLE.get(m.group(1), ""), text)


def _macro_args(rest: str) -> list[str]:
    return [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', rest)]


def _macro_text(name: str, rest: str) -> str:
    """The visible text of one macro line (``.B foo``, ``.BR ls (1)``, ``.Xr ls 1``...)."""
    args = _macro_args(rest)
    if name in ("BR", "BI", "IB", "IR", "RB", "RI"):  # alternating fonts, no spaces between
        return "".join(args)
    if name == "Xr" and len(args) >= 2:
        return f"{args[0]}({args[1]})" + "".join(args[2:])
    if name == "Fl":
        return " ".join("-" + a if a.isalnum() else a for a in args) or "-"
    return " ".join(args)


def parse_roff(source: str) -> tuple[str, str] | None:
    """``(description from NAME, DESCRIPTION text)`` of one roff page, or None.

    Example::

        >>> parse_roff(".TH LS 1\\n.SH NAME\\nls \\\\- list directory contents\\n"
        ...            ".SH DESCRIPTION\\nList information about the FILEs.\\n")
        ('list directory contents', 'List information about the FILEs.')
    """
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    nd = ""  # mdoc pages put the one-line description in .Nd
    nm = ""  # ...and the page's name in the first .Nm; a bare .Nm repeats it
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"", ".\\#")) or line.strip() in (".", "'"):
            continue
        if line.startswith((".", "'")):
            m = re.match(r"[.']\s*(\S+)\s*(.*)", line)
            if not m:
                continue
            name, rest = m.group(1), m.group(2)
            if name in ("SH", "Sh"):
                current = sections.setdefault(squash(_unescape(rest)).strip('"').upper(), [])
                continue
            if name == "Nd":
                nd = _unescape(rest)
            if name == "Nm":
                if rest.strip() and not nm:
                    nm = rest.split()[0]
                rest = rest or nm
            if current is None:
                continue
            if name in _PARAGRAPH:
                current.append("")
            if name in _LAYOUT:
                continue
            text = _unescape(_macro_text(name, rest))
            if text.strip():  # an empty piece would read as a paragraph break
                current.append(text)
        elif current is not None:
            current.append(_unescape(line))

    if nd:
        summary = squash(nd)
    else:
        name_text = squash(" ".join(sections.get("NAME", [])))
        parts = re.split(r"\s+-+\s+", name_text, maxsplit=1)
        if len(parts) != 2:
            return None
        summary = parts[1]
    paragraphs, buf = [], []
    for piece in sections.get("DESCRIPTION", []) + [""]:
        if piece.strip():
            buf.append(piece)
        elif buf:
            paragraphs.append(squash(" ".join(buf)))
            buf = []
    body = "\n".join(p for p in paragraphs if p)
    if not summary or not body:
        return None
    return summary, body


def man_files(roots: tuple[Path, ...] = MAN_ROOTS) -> list[Path]:
    """English man page files (no symlinks: they repeat another page), deterministic order.

    The order is by a stable hash of the page's path, so taking the first N gives an even,
    reproducible sample across sections and packages rather than everything starting with 'a'.
    """
    files = []
    for root in roots:
        if not root.is_dir():
            continue
        for section in sorted(root.glob("man[1-8]")):
            for path in section.iterdir():
                if path.is_symlink() or not path.is_file():
                    continue
                files.append(path)
    return sorted(files, key=lambda p: (stable_hash(p.as_posix()), p.as_posix()))


def _read(path: Path) -> str | None:
    if path.suffix != ".gz" and not re.search(r"\.\d\w*$", path.name):
        return None  # bz2/xz/other compressions: not worth a dependency
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    return raw.decode("utf-8", errors="replace")


def family(path: Path) -> str:
    """The package a page most likely belongs to: its name up to the first ``_ - .``."""
    return re.split(r"[_.\-]", path.name, maxsplit=1)[0].lower()


def iter_man_pairs(
    limit: int, roots: tuple[Path, ...] = MAN_ROOTS, per_family: int = 25
) -> Iterator[tuple[str, str, str]]:
    """Yield up to ``limit`` ``(summary, body, source)`` triples, source ``"man:<page>(<sec>)"``.

    At most ``per_family`` pages come from one family (``git-*``, ``systemd.*``...): some
    machines carry thousands of near-identical generated pages (``gcloud_*``) that would
    otherwise crowd out everything else.

    Example::

        >>> pairs = list(iter_man_pairs(limit=3))  # empty where no man pages are installed
        >>> all(source.startswith("man:") for _, _, source in pairs)
        True
    """
    if limit <= 0:
        return
    count = 0
    per: dict[str, int] = {}
    for path in man_files(roots):
        fam = family(path)
        if per.get(fam, 0) >= per_family:
            continue  # decided before reading: skipping costs nothing
        text = _read(path)
        if text is None or text.lstrip().startswith(".so "):
            continue
        parsed = parse_roff(text)
        if parsed is None:
            continue
        page = path.name.removesuffix(".gz")
        stem, _, sec = page.rpartition(".")
        yield parsed[0], parsed[1], f"man:{stem}({sec})"
        per[fam] = per.get(fam, 0) + 1
        count += 1
        if count >= limit:
            return

"""Read verification pairs: the official LFW ``pairs.txt`` format and a simple CSV.

LFW format (tab or space separated)::

    10  300            <- folds and pairs per label per fold (View 2), or a single count (View 1)
    Name   i   j       <- same person: Name/Name_000i.jpg and Name/Name_000j.jpg
    Name1  i   Name2 j <- different people

CSV format: ``path1,path2,same`` with ``same`` in 1/0/true/false/yes/no; an optional
header row; relative paths are resolved against the images directory (default: the CSV's folder).

A pair whose image file is missing is not an error: it is *skipped* and reported with its line, so an
evaluation on a dataset with a hole (LFW View 1 lacks Betsy_Coffin_0001) runs and says what it left
out. A malformed line is an error (a typo would silently change the protocol otherwise).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facestyle.errors import UsageError

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class Pair:
    """One pair to verify; ``fold`` is -1 when the file defines no folds."""

    path1: Path
    path2: Path
    same: bool
    line: int
    fold: int = -1


@dataclass(frozen=True)
class SkippedPair:
    """A pair left out of the evaluation, and why."""

    line: int
    path1: str
    path2: str
    same: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PairList:
    pairs: list[Pair]
    skipped: list[SkippedPair] = field(default_factory=list)
    format: str = "lfw"
    #: Folds defined by the file header (LFW View 2's "10 300"); 0 when the file defines none.
    n_folds: int = 0
    warnings: list[str] = field(default_factory=list)

    def image_paths(self) -> list[Path]:
        """Unique image paths in first-use order: each is embedded once, however many pairs use it."""
        seen: dict[Path, None] = {}
        for p in self.pairs:
            seen.setdefault(p.path1)
            seen.setdefault(p.path2)
        return list(seen)


def lfw_image_path(images_dir: Path, name: str, index: int) -> Path:
    """``images_dir/Name/Name_000i.jpg``, LFW's naming."""
    return images_dir / name / f"{name}_{index:04d}.jpg"


def _int(token: str, path: Path, line_no: int) -> int:
    try:
        value = int(token)
    except ValueError:
        raise UsageError(f"{path}:{line_no}: expected an image number, got {token!r}") from None
    if value < 0:
        raise UsageError(f"{path}:{line_no}: negative image number {value}")
    return value


def _resolve(pairs: list[Pair], skipped: list[SkippedPair]) -> list[Pair]:
    """Keep pairs whose files exist; record the others as skipped."""
    kept = []
    for p in pairs:
        missing = [str(q) for q in (p.path1, p.path2) if not q.is_file()]
        if missing:
            reason = "missing image: " + ", ".join(missing)
            skipped.append(SkippedPair(p.line, str(p.path1), str(p.path2), p.same, reason))
        else:
            kept.append(p)
    return kept


def read_lfw_pairs(path: str | Path, images_dir: str | Path) -> PairList:
    """Parse an official LFW pairs file; see the module docstring for the format."""
    path, images_dir = Path(path), Path(images_dir)
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read pairs file {path}: {exc}") from None
    numbered = [(i + 1, ln.split()) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise UsageError(f"{path}: empty pairs file")
    header_no, header = numbered[0]
    if not 1 <= len(header) <= 2 or not all(t.isdigit() for t in header):
        raise UsageError(
            f"{path}:{header_no}: first line must be a count or 'folds count', got {' '.join(header)!r}"
        )
    n_folds, per = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    pairs: list[Pair] = []
    for line_no, tok in numbered[1:]:
        if len(tok) == 3:
            a = lfw_image_path(images_dir, tok[0], _int(tok[1], path, line_no))
            b = lfw_image_path(images_dir, tok[0], _int(tok[2], path, line_no))
            same = True
        elif len(tok) == 4:
            a = lfw_image_path(images_dir, tok[0], _int(tok[1], path, line_no))
            b = lfw_image_path(images_dir, tok[2], _int(tok[3], path, line_no))
            same = False
        else:
            raise UsageError(
                f"{path}:{line_no}: expected 'name i j' or 'name1 i name2 j', got {len(tok)} fields"
            )
        pairs.append(Pair(a, b, same, line_no))
    expected = 2 * n_folds * per
    warnings = []
    if len(pairs) != expected:
        if n_folds > 1:
            raise UsageError(
                f"{path}: header says {n_folds} folds of {per} same + {per} different pairs "
                f"({expected}), but the file lists {len(pairs)}"
            )
        warnings.append(f"header says {per} + {per} pairs, the file lists {len(pairs)}")
    if n_folds > 1:  # View 2: fold k is the k-th block of 2*per lines
        pairs = [Pair(p.path1, p.path2, p.same, p.line, i // (2 * per)) for i, p in enumerate(pairs)]
    skipped: list[SkippedPair] = []
    kept = _resolve(pairs, skipped)
    return PairList(kept, skipped, "lfw", n_folds if n_folds > 1 else 0, warnings)


def _parse_same(token: str, path: Path, line_no: int) -> bool:
    t = token.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise UsageError(f"{path}:{line_no}: 'same' must be 1/0/true/false, got {token!r}")


def read_csv_pairs(path: str | Path, images_dir: str | Path | None = None) -> PairList:
    """Parse ``path1,path2,same`` rows (optional header); relative paths resolve against ``images_dir``."""
    path = Path(path)
    base = Path(images_dir) if images_dir is not None else path.parent
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read pairs file {path}: {exc}") from None
    pairs: list[Pair] = []
    for i, row in enumerate(rows):
        line_no = i + 1
        cells = [c.strip() for c in row]
        if not cells or all(not c for c in cells) or cells[0].startswith("#"):
            continue
        if len(cells) != 3:
            raise UsageError(f"{path}:{line_no}: expected 'path1,path2,same', got {len(cells)} fields")
        if not pairs and cells[2].lower() not in _TRUE | _FALSE:  # a header row
            continue
        a, b = (Path(c) if Path(c).is_absolute() else base / c for c in cells[:2])
        pairs.append(Pair(a, b, _parse_same(cells[2], path, line_no), line_no))
    if not pairs:
        raise UsageError(f"{path}: no pairs found")
    skipped: list[SkippedPair] = []
    kept = _resolve(pairs, skipped)
    return PairList(kept, skipped, "csv", 0, [])


def read_pairs(path: str | Path, images_dir: str | Path | None = None) -> PairList:
    """Read either format: ``.csv`` files (or files whose first line has commas) are CSV, others LFW.

    For the LFW format without ``images_dir``, an ``images`` folder next to the pairs file is used.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"pairs file not found: {path}")
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError as exc:
        raise UsageError(f"cannot read pairs file {path}: {exc}") from None
    if path.suffix.lower() == ".csv" or "," in first:
        return read_csv_pairs(path, images_dir)
    if images_dir is None:
        images_dir = path.parent / "images"
        if not images_dir.is_dir():
            raise UsageError(f"{path} is in LFW format: give the images directory (Name/Name_NNNN.jpg)")
    if not Path(images_dir).is_dir():
        raise UsageError(f"images directory not found: {images_dir}")
    return read_lfw_pairs(path, images_dir)

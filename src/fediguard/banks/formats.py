"""Reading and writing bank entries: fediguard's CSV, and the signal list of Meta's ThreatExchange tools.

**CSV** (:func:`parse_csv`, :func:`dump_csv`) is fediguard's own, lossless format: UTF-8 (a BOM is
accepted), RFC 4180 quoting, header ``hash,kind,note,variant,parent`` (the older ``hash,kind,note``
is read too), ``kind`` one of ``pdq`` or ``sha256``, notes free text (commas, quotes, newlines, any
Unicode). ``variant`` and ``parent`` are empty but for a PDQ hash of a cropped copy of an image: the
crop's name and the PDQ hash of the uncropped image, whose entry it stays tied to on import. Output
uses CRLF line ends as RFC 4180 says, which is also what makes the csv module quote notes holding a
bare carriage return.

**Signal list** (:func:`parse_signal_list`, :func:`dump_signal_list`) is the file format of the
hash-exchange tools that HMA (hasher-matcher-actioner) is built on: one ``<signal_type> <hash>`` per
line, type names as python-threatexchange spells them (``pdq``; SHA-256 is ``video_sha256``, the only
SHA-256 signal type it defines). Why this one, from reading facebook/ThreatExchange:

* HMA 2.0 (``hasher-matcher-actioner/src/OpenMediaMatch``) has no bank file import or export. Banks
  fill from exchanges (NCMEC, StopNCII, ThreatExchange: python-threatexchange ``SignalExchangeAPI``
  classes) or one hash at a time through ``POST /c/bank/<bank>/signal`` with ``{"pdq": "<hex>"}``.
* The one file that this ecosystem both reads and writes is the signal list: python-threatexchange's
  ``LocalFileSignalExchangeAPI`` (``threatexchange/exchanges/impl/file_api.py``) imports it, HMA 1.x
  registered that class as an exchange, any HMA 2.0 deployment can add it to ``exchange_types`` in its
  omm_config, and ``threatexchange dataset --print-signals --signals-only`` writes it. Each line is
  also exactly one HMA 2.0 add-signal call, so a shell loop feeds an HMA bank from our export.
* ``threatexchange dataset -P --csv`` (collab,signal_type,signal_str,category,tags) was passed over:
  nothing reads it back.

The signal list has no field for notes, so they are written as comment lines (``# `` and the note,
one comment line per line of it) just before their entry: python-threatexchange skips a line whose
signal type it does not know (``#``), and :func:`parse_signal_list` gives the comment lines right
before an entry back as its note (a blank line ends a comment that belongs to no entry). A crop
variant's note names its crop and parent, as plain text. When a collaboration fixes the type
(``threatexchange dataset -P -S -s pdq`` prints bare
hashes), pass ``signal_kind`` and every line is read as a bare hash of that kind, as the exchange does.

Parsing is all-or-nothing: every malformed line is collected with its line number and
:class:`BankFormatError` lists them; no entries are returned from a file with any fault.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from fediguard.banks._hex import parse_hex256
from fediguard.errors import FediguardError

KINDS = ("pdq", "sha256")
"""Hash kinds a bank entry can hold: a PDQ perceptual hash or the SHA-256 of the upload's bytes."""

CSV_HEADER = ("hash", "kind", "note", "variant", "parent")
CSV_HEADER_V1 = CSV_HEADER[:3]
"""The header of files written before crop variants had columns of their own (still read)."""

_KIND_NAMES = {"pdq": "PDQ hash", "sha256": "SHA-256 digest"}
_SIGNAL_TYPE_OF_KIND = {"pdq": "pdq", "sha256": "video_sha256"}
_KIND_OF_SIGNAL_TYPE = {v: k for k, v in _SIGNAL_TYPE_OF_KIND.items()}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class BankFormatError(FediguardError, ValueError):
    """A bank file has malformed lines; ``problems`` holds (line number, what is wrong) for each.

    The message lists the first :attr:`LISTED` and counts the rest.
    """

    LISTED = 20

    def __init__(self, problems: Sequence[tuple[int, str]]) -> None:
        self.problems = tuple(sorted(problems))
        count = len(self.problems)
        lines = [f"{count} malformed line{'s' if count != 1 else ''}; nothing was imported:"]
        lines += [f"  line {number}: {message}" for number, message in self.problems[: self.LISTED]]
        if count > self.LISTED:
            lines.append(f"  … and {count - self.LISTED} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class BankEntry:
    """One hash in a bank: its kind (``pdq`` or ``sha256``), its value, and a free-text note.

    The value is normalised to 64 lowercase hex characters on creation; a bad kind or value raises
    ValueError, so an entry that exists is one that can be exported and matched.
    """

    kind: str
    value: str
    note: str = ""
    variant: str = ""
    """For a PDQ hash of a cropped copy of an image: the crop's name (banks/pdq.py ``CROPS``)."""
    parent: str = ""
    """For a variant: the PDQ hash of the uncropped image, the entry it belongs to."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(self.note, str):
            raise ValueError("note must be a string")
        object.__setattr__(self, "value", parse_hex256(self.value, _KIND_NAMES[self.kind]))
        if self.variant or self.parent:
            if self.kind != "pdq" or not self.variant:
                raise ValueError("only PDQ entries have crop variants, and a variant needs its name")
            if len(self.variant) > 32:
                raise ValueError(f"a crop variant's name is at most 32 characters, not {len(self.variant)}")
            object.__setattr__(self, "parent", parse_hex256(self.parent, "parent PDQ hash"))

    @property
    def exported_note(self) -> str:
        """The note as written to signal lists, which have no place for the variant: it is said in
        the note, so an instance that imports the file keeps the crop hashes as ordinary entries."""
        if not self.variant:
            return self.note
        said = f"crop {self.variant} of pdq {self.parent}"
        return f"{self.note} ({said})" if self.note else said


def parse_csv(data: str | bytes) -> list[BankEntry]:
    """Read fediguard's CSV (see the module docstring); raises :class:`BankFormatError` listing all faults."""
    text, problems = _decode(data)
    entries: list[BankEntry] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header_seen = False
    columns = len(CSV_HEADER)
    end_of_previous = 0
    try:
        for row in reader:
            # A record may span lines (a quoted note with newlines): report the line where it starts.
            number, end_of_previous = end_of_previous + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if not header_seen:
                header_seen = True
                header = tuple(cell.strip().lower() for cell in row)
                if header not in (CSV_HEADER, CSV_HEADER_V1):
                    expected = ",".join(CSV_HEADER)
                    problems.append((number, f"expected the header line {expected!r}, got {','.join(row)!r}"))
                columns = len(header)
                continue
            entry = _entry_from_row(row, columns)
            if isinstance(entry, BankEntry):
                entries.append(entry)
            else:
                problems.append((number, entry))
    except csv.Error as exc:
        problems.append(
            (end_of_previous + 1, f"broken CSV quoting ({exc}); the rest of the file was not read")
        )
    if not header_seen:
        problems.append((1, f"no header line: expected {','.join(CSV_HEADER)!r}"))
    if problems:
        raise BankFormatError(problems)
    return entries


def _entry_from_row(row: list[str], columns: int) -> BankEntry | str:
    if not 2 <= len(row) <= columns:
        names = ",".join(CSV_HEADER[:columns])
        return f"expected {columns} fields ({names}), got {len(row)}; quote notes that contain commas"
    faults = []
    kind = row[1].strip().lower()
    if kind not in KINDS:
        faults.append(f"unknown kind {row[1]!r}; expected pdq or sha256")
    try:
        value = parse_hex256(row[0], _KIND_NAMES.get(kind, "hash"))
    except ValueError as exc:
        faults.append(str(exc))
    if faults:
        return "; ".join(faults)
    note = row[2] if len(row) > 2 else ""
    variant = row[3].strip() if len(row) > 3 else ""
    parent = row[4].strip() if len(row) > 4 else ""
    if bool(variant) != bool(parent):
        return "a crop variant needs both its name (variant) and its parent's PDQ hash (parent)"
    try:
        return BankEntry(kind=kind, value=value, note=note, variant=variant, parent=parent)
    except ValueError as exc:
        return str(exc)


def dump_csv(entries: Iterable[BankEntry]) -> str:
    """Write entries as fediguard's CSV, header first. :func:`parse_csv` gives back equal entries,
    crop variants included (tied to their parent by its PDQ hash).

    The text has CRLF line ends inside it: write it with ``newline=""`` or encode it to UTF-8 bytes.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    writer.writerows((e.value, e.kind, e.note, e.variant, e.parent) for e in entries)
    return out.getvalue()


def parse_signal_list(data: str | bytes, *, signal_kind: str | None = None) -> list[BankEntry]:
    """Read a ThreatExchange signal list: ``<signal_type> <hash>`` per line, blank lines skipped.

    Comment lines (``#``) right before an entry are its note. Signal types ``pdq`` and
    ``video_sha256`` are understood; any other type is reported as a fault
    rather than skipped, so that nothing is silently left out of a bank. With ``signal_kind``
    (``pdq`` or ``sha256``) every line is a bare hash of that kind. Raises :class:`BankFormatError`.
    """
    if signal_kind is not None and signal_kind not in KINDS:
        raise ValueError(f"signal_kind must be one of {', '.join(KINDS)}, got {signal_kind!r}")
    text, problems = _decode(data)
    entries: list[BankEntry] = []
    comment: list[str] = []
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        line = raw.strip()
        if not line:
            comment = []  # a comment that belongs to no entry
            continue
        if raw.lstrip().startswith("#"):
            body = raw.lstrip()[1:]
            comment.append(body[1:] if body.startswith(" ") else body)
            continue
        entry = _entry_from_signal_line(line, signal_kind)
        if isinstance(entry, BankEntry):
            entries.append(replace(entry, note="\n".join(comment)) if comment else entry)
        else:
            problems.append((number, entry))
        comment = []
    if problems:
        raise BankFormatError(problems)
    return entries


def _entry_from_signal_line(line: str, signal_kind: str | None) -> BankEntry | str:
    if signal_kind is not None:
        kind, signal = signal_kind, line
    else:
        signal_type, _, signal = line.partition(" ")
        signal = signal.strip()
        if not signal:
            return f"expected '<signal_type> <hash>', got only {signal_type!r}"
        known = _KIND_OF_SIGNAL_TYPE.get(signal_type.lower())
        if known is None:
            accepted = " or ".join(_KIND_OF_SIGNAL_TYPE)
            return f"signal type {signal_type!r} is not one fediguard matches ({accepted})"
        kind = known
    try:
        return BankEntry(kind=kind, value=signal)
    except ValueError as exc:
        return str(exc)


def dump_signal_list(entries: Iterable[BankEntry], *, drop_notes: bool = False) -> str:
    """Write entries as a ThreatExchange signal list, each note as comment lines before its entry
    (``drop_notes`` leaves them out). :func:`parse_signal_list` gives back equal entries, but crop
    variants, which come back as ordinary PDQ entries whose note names the crop."""
    lines = []
    for entry in entries:
        note = entry.exported_note
        if note and not drop_notes:
            lines += [f"# {line}\n" if line else "#\n" for line in _LINE_BREAK.split(note)]
        lines.append(f"{_SIGNAL_TYPE_OF_KIND[entry.kind]} {entry.value}\n")
    return "".join(lines)


def _decode(data: str | bytes) -> tuple[str, list[tuple[int, str]]]:
    """Text without a BOM, and a fault for each line that is not UTF-8 (that line is blanked)."""
    if isinstance(data, str):
        return data.removeprefix("\ufeff"), []
    problems: list[tuple[int, str]] = []
    # UTF-8 never uses byte 0x0A inside a multi-byte character, so lines decode independently and a
    # bad byte is pinned to its own line.
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    decoded = []
    for number, line in enumerate(lines, start=1):
        try:
            decoded.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            problems.append((number, f"not UTF-8: byte 0x{line[exc.start]:02x} at column {exc.start + 1}"))
            decoded.append("")
    return "\n".join(decoded), problems

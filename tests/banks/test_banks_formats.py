"""Bank file formats: round trips, and all-or-nothing parsing that names every bad line."""

from __future__ import annotations

import hashlib

import pytest

from fediguard.banks.formats import (
    BankEntry,
    BankFormatError,
    dump_csv,
    dump_signal_list,
    parse_csv,
    parse_signal_list,
)
from fediguard.errors import FediguardError

PDQ_A = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"  # ThreatExchange sample
PDQ_B = "e64cc9d91c623882f8d1f1d9a398e78c9f199b3bd83924f2b7e11e0bf861b064"
SHA = hashlib.sha256(b"benign bytes").hexdigest()

NOTES = [
    "",
    "plain",
    "comma, inside",
    'she said "no"',
    '"quoted", then, commas',
    "two\nlines",
    "windows\r\nline end",
    "bare\rcarriage return",
    "  leading and trailing spaces  ",
    "unicode: Zoë, 日本語, emoji 🛡️",
    "tab\tand null\x00byte",
    '=HYPERLINK("x")',
]


def sample_entries() -> list[BankEntry]:
    entries = []
    for i, note in enumerate(NOTES):
        entries.append(BankEntry(kind="pdq" if i % 2 else "sha256", value=PDQ_A if i % 2 else SHA, note=note))
    entries.append(BankEntry("pdq", PDQ_B))
    entries.append(BankEntry("pdq", PDQ_B))  # repeats are kept: the file is a list, not a set
    return entries


def test_csv_round_trip_is_identity() -> None:
    entries = sample_entries()
    text = dump_csv(entries)
    assert text.startswith("hash,kind,note,variant,parent\r\n")
    assert parse_csv(text) == entries
    assert parse_csv(text.encode("utf-8")) == entries
    assert dump_csv(parse_csv(text)) == text


def test_csv_accepts_what_spreadsheets_produce() -> None:
    text = (
        "\ufeffHash , Kind,NOTE\n"
        "\n"
        f" {PDQ_A.upper()} , PDQ ,from a spreadsheet\n"
        f"{SHA},sha256\n"  # the note column left off
        "   \n"
    )
    assert parse_csv(text) == [
        BankEntry("pdq", PDQ_A, "from a spreadsheet"),
        BankEntry("sha256", SHA, ""),
    ]
    assert parse_csv(b"\xef\xbb\xbf" + text.encode()[3:]) == parse_csv(text)
    assert parse_csv("hash,kind,note\n") == []


def test_csv_reports_every_bad_line_and_returns_nothing() -> None:
    text = "\n".join(
        [
            "hash,kind,note",  # 1
            f"{PDQ_A},pdq,fine",  # 2
            f'{PDQ_A},pdq,"a note',  # 3: a note over three lines, fine
            "still the note",  # 4
            'end of it"',  # 5
            f"{PDQ_A[:-1]},pdq,short",  # 6
            f"{SHA},md5,unknown kind",  # 7
            f"{PDQ_A},pdq,unquoted, comma",  # 8
            f"{PDQ_A}",  # 9
            f"{PDQ_A[:-1]}g,sha256,bad digit",  # 10
            "",  # 11
            f"{SHA},sha256,fine",  # 12
            "xyz,photo,two faults",  # 13
        ]
    )
    with pytest.raises(BankFormatError) as caught:
        parse_csv(text)
    problems = caught.value.problems
    assert [number for number, _ in problems] == [6, 7, 8, 9, 10, 13]
    messages = dict(problems)
    assert "expected 64 hexadecimal characters, got 63" in messages[6]
    assert "unknown kind 'md5'" in messages[7]
    assert "got 4" in messages[8] and "quote notes" in messages[8]
    assert "got 1" in messages[9]
    assert "'g' at position 64" in messages[10]
    assert "unknown kind" in messages[13] and "not a hash" in messages[13]
    assert "line 6:" in str(caught.value) and "nothing was imported" in str(caught.value)
    assert isinstance(caught.value, FediguardError) and isinstance(caught.value, ValueError)


def test_csv_header_is_required() -> None:
    with pytest.raises(BankFormatError) as caught:
        parse_csv(f"{PDQ_A},pdq,no header\n{PDQ_B},pdq,\n")
    assert [n for n, _ in caught.value.problems] == [1]
    assert "expected the header line" in caught.value.problems[0][1]
    with pytest.raises(BankFormatError, match="no header line"):
        parse_csv("")


def test_csv_unterminated_quote_is_reported_where_it_opens() -> None:
    text = f'hash,kind,note\n{PDQ_A},pdq,ok\n{PDQ_B},pdq,"never closed\n{SHA},sha256,x\n'
    with pytest.raises(BankFormatError) as caught:
        parse_csv(text)
    assert [n for n, _ in caught.value.problems] == [3]
    assert "broken CSV quoting" in caught.value.problems[0][1]


def test_invalid_utf8_is_reported_with_its_line() -> None:
    data = (
        f"hash,kind,note\n{PDQ_A},pdq,ok\n{PDQ_B},pdq,caf".encode() + b"\xe9\n" + f"{SHA},sha265,x\n".encode()
    )
    with pytest.raises(BankFormatError) as caught:
        parse_csv(data)
    assert [n for n, _ in caught.value.problems] == [3, 4]
    assert "not UTF-8: byte 0xe9" in caught.value.problems[0][1]


def test_error_message_lists_twenty_and_counts_the_rest() -> None:
    text = "hash,kind,note\n" + "".join(f"bad{i},pdq,\n" for i in range(45))
    with pytest.raises(BankFormatError) as caught:
        parse_csv(text)
    assert len(caught.value.problems) == 45
    message = str(caught.value)
    assert message.startswith("45 malformed lines; nothing was imported:")
    assert "line 21:" in message and "line 22:" not in message
    assert message.endswith("… and 25 more")


def test_signal_list_round_trip_is_identity() -> None:
    entries = [BankEntry("pdq", PDQ_A), BankEntry("sha256", SHA), BankEntry("pdq", PDQ_B)]
    text = dump_signal_list(entries)
    assert text == f"pdq {PDQ_A}\nvideo_sha256 {SHA}\npdq {PDQ_B}\n"
    assert parse_signal_list(text) == entries
    assert parse_signal_list(text.encode()) == entries


def test_signal_list_reads_threatexchange_output() -> None:
    """Blank lines and CRLF as python-threatexchange's file reader tolerates them."""
    text = f"pdq {PDQ_A}\r\n\r\nvideo_sha256  {SHA.upper()}  \r\npdq {PDQ_B}"
    assert parse_signal_list(text) == [
        BankEntry("pdq", PDQ_A),
        BankEntry("sha256", SHA),
        BankEntry("pdq", PDQ_B),
    ]


def test_signal_list_of_bare_hashes_with_a_fixed_kind() -> None:
    assert parse_signal_list(f"{PDQ_A}\n{PDQ_B}\n", signal_kind="pdq") == [
        BankEntry("pdq", PDQ_A),
        BankEntry("pdq", PDQ_B),
    ]
    with pytest.raises(ValueError, match="signal_kind"):
        parse_signal_list("", signal_kind="md5")


def test_signal_list_reports_every_bad_line_and_returns_nothing() -> None:
    text = "\n".join(
        [
            f"pdq {PDQ_A}",  # 1
            "video_md5 d41d8cd98f00b204e9800998ecf8427e",  # 2: a type fediguard cannot match
            PDQ_B,  # 3: bare hash, no type
            f"pdq {PDQ_A[:60]}",  # 4
            "",  # 5
            f"pdq {PDQ_A} extra",  # 6
            f"video_sha256 {SHA}",  # 7
        ]
    )
    with pytest.raises(BankFormatError) as caught:
        parse_signal_list(text)
    messages = dict(caught.value.problems)
    assert sorted(messages) == [2, 3, 4, 6]
    assert "'video_md5' is not one fediguard matches" in messages[2]
    assert "expected '<signal_type> <hash>'" in messages[3]
    assert "got 60" in messages[4]
    assert "' ' at position 65" in messages[6]


def test_signal_list_keeps_notes_as_comments_threatexchange_skips() -> None:
    entries = [
        BankEntry("pdq", PDQ_A, "reviewed 2024-05-01"),
        BankEntry("sha256", SHA),
        BankEntry("pdq", PDQ_B, "two\nlines\n\n  and a blank one  "),
    ]
    text = dump_signal_list(entries)
    assert text == (
        f"# reviewed 2024-05-01\npdq {PDQ_A}\nvideo_sha256 {SHA}\n"
        f"# two\n# lines\n#\n#   and a blank one  \npdq {PDQ_B}\n"
    )
    assert parse_signal_list(text) == entries
    assert parse_signal_list(text.encode()) == entries
    # python-threatexchange's LocalFileSignalExchangeAPI splits each line at its first space and
    # skips signal types it does not know: every comment line has the type "#".
    typed = [line.partition(" ")[0] for line in text.splitlines()]
    assert set(typed) == {"#", "pdq", "video_sha256"}
    assert dump_signal_list(entries, drop_notes=True) == f"pdq {PDQ_A}\nvideo_sha256 {SHA}\npdq {PDQ_B}\n"
    # A comment followed by a blank line belongs to no entry; bare hashes take comments too.
    loose = f"# exported by hand\n\npdq {PDQ_A}\n# it\n{PDQ_B}\n"
    assert parse_signal_list(loose.replace("pdq ", ""), signal_kind="pdq") == [
        BankEntry("pdq", PDQ_A),
        BankEntry("pdq", PDQ_B, "it"),
    ]


def test_bank_entry_validates_and_normalises() -> None:
    assert BankEntry("pdq", f" {PDQ_A.upper()} ").value == PDQ_A
    with pytest.raises(ValueError, match="unknown kind"):
        BankEntry("md5", PDQ_A)
    with pytest.raises(ValueError, match="not a SHA-256 digest"):
        BankEntry("sha256", SHA[:-2])


def test_crop_variants_stay_tied_to_their_entry_through_csv() -> None:
    parent = "cd" * 32
    entries = [
        BankEntry("pdq", parent, "known"),
        BankEntry("pdq", "ef" * 32, "known", "left 5%", parent),
        BankEntry("pdq", "01" * 32, "", "top 2.5%", parent),
    ]
    text = dump_csv(entries)
    assert text.splitlines()[2] == f"{'ef' * 32},pdq,known,left 5%,{parent}"
    assert parse_csv(text) == entries
    # The older three-column files are still read; a half-named variant is a fault.
    assert parse_csv(f"hash,kind,note\n{parent},pdq,x\n") == [BankEntry("pdq", parent, "x")]
    with pytest.raises(BankFormatError, match="line 2: a crop variant needs both"):
        parse_csv(f"hash,kind,note,variant,parent\n{parent},pdq,x,left 5%,\n")
    # Signal lists have nowhere for the tie: the crop is said in the note.
    back = parse_signal_list(dump_signal_list(entries))
    assert back[1] == BankEntry("pdq", "ef" * 32, f"known (crop left 5% of pdq {parent})")
    assert back[2] == BankEntry("pdq", "01" * 32, f"crop top 2.5% of pdq {parent}")
    with pytest.raises(ValueError, match="only PDQ entries"):
        BankEntry("sha256", "ab" * 32, "", "left 5%", parent)
    with pytest.raises(ValueError, match="parent PDQ hash"):
        BankEntry("pdq", "ab" * 32, "", "left 5%", "xyz")

"""Bad-input suite: generated malformed corpora and task files.

Every malformed corpus line must be quarantined to ``rejects.tsv`` with a reason and its line number,
and the counts must reconcile: rows in = rows out + dropped (by rule) + rejected (by reason). Task
files are stricter (the splits define the task): a bad one is an error naming the file and the line.

The generators below build each file from labelled lines, so every test knows which line must be
rejected and why. Task files: every malformation is an error naming the file and line, except ids
repeated across splits (leakage), which are quarantined by default (``repeated_ids: drop``) with the
counts reconciled, or refused (``repeated_ids: error``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from twilbert.config import ConfigError
from twilbert.text.corpus import COLUMNS, REJECT_REASONS, CorpusError, ingest, normalize_corpora
from twilbert.text.normalize import DropRules, NormalizeConfig, NormalizeRules

HEADERS = {"pairs": b"ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT", "tweets": b"ID\tTEXT"}
WORDS = "hola que tal el partido de hoy fue muy bueno pero el arbitro no vio nada claro mañana más".split()


@dataclass
class Corpus:
    """A generated file: its bytes and, per 1-based line, the reason it must be rejected (None = kept)."""

    kind: str
    lines: list[bytes] = field(default_factory=list)
    expected: dict[int, str | None] = field(default_factory=dict)
    header: bool = True
    newline: bytes = b"\n"

    def __post_init__(self) -> None:
        if self.header:
            self.lines.append(HEADERS[self.kind])

    def add(self, raw: bytes, reason: str | None) -> int:
        self.lines.append(raw)
        self.expected[len(self.lines)] = reason
        return len(self.lines)

    def payload(self, bom: bool = False) -> bytes:
        return (b"\xef\xbb\xbf" if bom else b"") + b"".join(ln + self.newline for ln in self.lines)

    @property
    def rejected(self) -> dict[int, str]:
        return {n: r for n, r in self.expected.items() if r is not None}


def _text(rng: np.random.Generator, n: int | None = None) -> bytes:
    return " ".join(rng.choice(WORDS, n or int(rng.integers(4, 12)))).encode()


def good_row(kind: str, rng: np.random.Generator, i: int) -> bytes:
    tag = f" n{i}".encode()  # keeps every row distinct: no duplicate drops unless a test asks for them
    if kind == "pairs":
        return b"\t".join([b"%d" % (10 * i), _text(rng) + tag, b"%d" % (10 * i + 1), _text(rng) + tag])
    return b"\t".join([b"%d" % (10 * i), _text(rng) + tag])


def malformed_rows(kind: str, rng: np.random.Generator) -> list[tuple[bytes, str]]:
    """One of each malformation the issue lists, with the reason it must get."""
    ncol = len(COLUMNS[kind])
    t = _text(rng)
    rows = [
        (b"\t".join([b"1"] * (ncol - 1)), "wrong_column_count"),  # a field short
        (b"\t".join([b"2", t] * ncol), "wrong_column_count"),  # too many fields
        (b"3\t" + t + b"\tcon un\ttab dentro" + (b"\t4\t" + t if kind == "pairs" else b""), "wrong_column_count"),  # embedded tab
        (b"", "wrong_column_count"),  # an interior blank line
        (b"5\t" + t + b" \xff\xfe no utf8 \xc3" + (b"\t6\t" + t if kind == "pairs" else b""), "invalid_utf8"),
        (b"7\t" + t + b" \x00\x01\x1b binario" + (b"\t8\t" + t if kind == "pairs" else b""), "control_chars"),
        (b"9\tsalto\rde carro" + (b"\t10\t" + t if kind == "pairs" else b""), "stray_cr"),
        (b'11\t"dijo ""hola"" y se fue"' + (b"\t12\t" + t if kind == "pairs" else b""), "csv_quoted_field"),
        (b"\t" + t + (b"\t14\t" + t if kind == "pairs" else b""), "empty_id"),
        (b"15\t   " + (b"\t16\t" + t if kind == "pairs" else b""), "empty_text"),
        (b"17\t" + b"muy largo " * 700 + (b"\t18\t" + t if kind == "pairs" else b""), "too_long"),  # 7000 chars
        (b"19\t" + b"x" * (3 << 20), "too_long"),  # 3 MB, skipped by the reader without being buffered
        (bytes(rng.integers(0x80, 0x100, 300, dtype=np.uint8)), "invalid_utf8"),  # binary garbage
    ]
    return rows


def generate(kind: str, seed: int, *, n_good: int = 60, header: bool = True, newline: bytes = b"\n") -> Corpus:
    """Good rows with every malformation spread among them (and a few kept oddities)."""
    rng = np.random.default_rng(seed)
    c = Corpus(kind, header=header, newline=newline)
    bad = malformed_rows(kind, rng)
    slots = set(rng.choice(n_good, len(bad), replace=False).tolist())
    bad_iter = iter(bad)
    for i in range(n_good):
        c.add(good_row(kind, rng, i), None)
        if i in slots:
            c.add(*next(bad_iter))
    # Kept as they are: quotes that are not CSV quoting, a text starting with a quote (polars'
    # default quoting once swallowed half a file on these), and a BOM character inside a text.
    extra = (b'"vale" dijo ella', b'"empieza con comillas y sigue', "zero\ufeffwidth no break".encode())
    for j, text in enumerate(extra):
        fields = [b"%d" % (9000 + j), text] + ([b"%d" % (9100 + j), _text(rng)] if kind == "pairs" else [])
        c.add(b"\t".join(fields), None)
    return c


def run_stage(tmp_path: Path, corpora: dict[str, list[bytes]], *, header: bool = True) -> tuple[dict, list[list[str]], Path]:
    """normalize_corpora on the given files; returns stats.json, the rejects rows and the out dir."""
    paths: dict[str, list[Path]] = {"pairs": [], "tweets": []}
    for kind, payloads in corpora.items():
        for k, payload in enumerate(payloads):
            p = tmp_path / f"{kind}-{k}.tsv"
            p.write_bytes(payload)
            paths[kind].append(p)
    out = tmp_path / "norm"
    normalize_corpora(pairs=paths["pairs"], tweets=paths["tweets"], cfg=NormalizeConfig(), out_dir=out, header=header)
    stats = json.loads((out / "stats.json").read_text())
    lines = (out / "rejects.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "file\tline\treason\tcontent"
    return stats, [ln.split("\t") for ln in lines[1:]], out


def assert_reconciled(stats: dict, rejects: list[list[str]]) -> None:
    for kind in ("pairs", "tweets"):
        s = stats[kind]
        assert s["reconciles"]
        assert s["rows_in"] == s["rows_out"] + s["rows_dropped"] + s["rows_rejected"]
        assert s["rows_rejected"] == sum(s["rejected"].values()) and s["rows_dropped"] == sum(s["dropped"].values())
    t = stats["total"]
    assert t["rows_in"] == t["rows_out"] + t["rows_dropped"] + t["rows_rejected"]
    assert len(rejects) == t["rows_rejected"]  # every rejected row is in the rejects file, once
    assert all(r[2] in REJECT_REASONS for r in rejects)


# --------------------------------------------------------------------------------------------------
# corpora: pairs and single tweets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pairs", "tweets"])
@pytest.mark.parametrize("variant", ["lf", "crlf", "bom", "headerless"])
def test_every_malformed_line_is_quarantined_with_its_reason_and_line(tmp_path, kind, variant):
    c = generate(kind, seed=len(variant), header=variant != "headerless", newline=b"\r\n" if variant == "crlf" else b"\n")
    stats, rejects, out = run_stage(tmp_path, {kind: [c.payload(bom=variant == "bom")]}, header=c.header)
    assert_reconciled(stats, rejects)
    got = {int(r[1]): r[2] for r in rejects}
    assert got == c.rejected
    s = stats[kind]
    assert s["rows_in"] == len(c.expected) and s["rows_out"] == len(c.expected) - len(c.rejected)
    assert s["header_lines"] == (1 if c.header else 0)
    # CRLF endings are line endings, not content: counted (on the lines read as text: not on the
    # undecodable ones nor the 3 MB one the reader skipped), and never a stray_cr.
    undecoded = sum(r == "invalid_utf8" for r in c.rejected.values()) + 1
    assert s["crlf_line_endings"] == (len(c.expected) - undecoded if variant == "crlf" else 0)
    df = pl.read_parquet(out / f"{kind}.parquet")
    kept = [n for n, r in c.expected.items() if r is None]
    assert df["line"].to_list() == kept
    text_col = "orig_text" if kind == "pairs" else "text"
    assert not df[text_col].str.contains("\r").any()
    # The quotes survive as characters; a leading quote does not swallow the lines after it.
    assert df.filter(pl.col(text_col).str.starts_with('"vale" dijo ella')).height == 1
    assert df.filter(pl.col(text_col).str.starts_with('"empieza con comillas')).height == 1


@pytest.mark.parametrize("chunk_bytes", [256, 4096, 16 << 20])
def test_non_utf8_rejects_report_the_line_number_whatever_the_chunking(tmp_path, chunk_bytes):
    rng = np.random.default_rng(3)
    c = Corpus("pairs")
    for i in range(300):
        if i in (0, 57, 123, 299):
            c.add(b"%d\ttexto con \xe9 latin-1\t%d\t" % (i, i) + _text(rng), "invalid_utf8")
        else:
            c.add(good_row("pairs", rng, i), None)
    src = tmp_path / "p.tsv"
    src.write_bytes(c.payload())
    rej = tmp_path / "r.tsv"
    rej.write_text("")
    stats = ingest([src], "pairs", NormalizeRules().effective(), DropRules(), tmp_path / "o.parquet", rej, chunk_bytes=chunk_bytes)
    rows = [ln.split("\t") for ln in rej.read_text(encoding="utf-8").splitlines()]
    assert [(int(r[1]), r[2]) for r in rows] == [(2, "invalid_utf8"), (59, "invalid_utf8"), (125, "invalid_utf8"), (301, "invalid_utf8")]
    assert all(r[0] == str(src) for r in rows)
    assert all("texto con \\\\xe9 latin-1" in r[3] for r in rows)  # the bad byte is shown, escaped
    assert stats.reconciles and stats.rejected == {"invalid_utf8": 4}


def test_pairs_and_tweets_together_and_empty_files_reconcile(tmp_path):
    pairs, tweets = generate("pairs", seed=11), generate("tweets", seed=12)
    corpora = {
        "pairs": [pairs.payload(), b"", HEADERS["pairs"] + b"\n"],  # + an empty and a header-only file
        "tweets": [tweets.payload(bom=True), b""],
    }
    stats, rejects, _ = run_stage(tmp_path, corpora)
    assert_reconciled(stats, rejects)
    assert stats["pairs"]["empty_files"] == 2 and stats["tweets"]["empty_files"] == 1 and stats["total"]["empty_files"] == 3
    assert stats["pairs"]["empty_file_names"] == [str(tmp_path / "pairs-1.tsv"), str(tmp_path / "pairs-2.tsv")]
    by_file = Counter(Path(r[0]).name for r in rejects)
    assert by_file == {"pairs-0.tsv": len(pairs.rejected), "tweets-0.tsv": len(tweets.rejected)}


def test_duplicates_and_rule_drops_are_counted_not_rejected(tmp_path):
    rng = np.random.default_rng(5)
    c = Corpus("pairs")
    rows = [good_row("pairs", rng, i) for i in range(40)]
    for r in rows:
        c.add(r, None)
    c.add(rows[3], None)  # an exact repeat (dropped: duplicate)
    c.add(b"900\t@ana @luis\t901\thttps://t.co/x", None)  # placeholders only (dropped)
    c.add(b"902\tjaja si\t903\tvale", None)  # too few words (dropped)
    stats, rejects, _ = run_stage(tmp_path, {"pairs": [c.payload()]})
    assert_reconciled(stats, rejects)
    assert not rejects
    assert stats["pairs"]["dropped"] == {"placeholder_only": 1, "too_few_words": 1, "duplicate": 1, "empty_after_normalize": 0}
    assert stats["pairs"]["rows_out"] == 40


def test_a_binary_file_is_refused_by_its_header_or_rejected_line_by_line(tmp_path):
    rng = np.random.default_rng(9)
    garbage = bytes(rng.integers(0, 256, 64 << 10, dtype=np.uint8))  # 64 KB, newlines included
    (tmp_path / "a").mkdir()
    with pytest.raises(CorpusError, match=r"pairs-0\.tsv: line 1 is not a pairs header: .*set data\.header: false"):
        run_stage(tmp_path / "a", {"pairs": [garbage]})
    # Header-less: nothing survives, so the stage refuses to produce an empty corpus -- after writing
    # stats.json and rejects.tsv, which account for every line.
    (tmp_path / "b").mkdir()
    with pytest.raises(CorpusError, match="no row to write"):
        run_stage(tmp_path / "b", {"pairs": [garbage]}, header=False)
    stats = json.loads((tmp_path / "b" / "norm" / "stats.json").read_text())
    rejects = (tmp_path / "b" / "norm" / "rejects.tsv").read_text(encoding="utf-8").splitlines()[1:]
    n_lines = garbage.count(b"\n") + (not garbage.endswith(b"\n"))
    assert stats["pairs"]["rows_in"] == n_lines == stats["pairs"]["rows_rejected"] == len(rejects)
    assert stats["pairs"]["reconciles"]


@pytest.mark.parametrize("kind", ["pairs", "tweets"])
def test_all_empty_inputs_are_an_error_naming_the_files(tmp_path, kind):
    (tmp_path / "x").mkdir()
    with pytest.raises(CorpusError, match=rf"no row to write from 2 input file\(s\) \(.*{kind}-0\.tsv, .*{kind}-1\.tsv\)"):
        run_stage(tmp_path / "x", {kind: [b"", HEADERS[kind] + b"\r\n"]})
    stats = json.loads((tmp_path / "x" / "norm" / "stats.json").read_text())
    assert stats[kind]["empty_files"] == 2 and stats["total"]["rows_in"] == 0


def test_ids_that_repeat_never_straddle_train_and_test(tmp_path):
    """The same tweet id with several replies, repeated rows, and a single tweet that is also a pair's
    original: after normalize -> vocab -> pairs, each original tweet id lives in one split only."""
    from twilbert.data.pairs import PairsConfig, _hash64, build_pair_shards
    from twilbert.text.tokenizer import Tokenizer
    from twilbert.text.vocab import VocabConfig, train_vocab

    rng = np.random.default_rng(21)
    c = Corpus("pairs")
    for k in range(80):
        orig = _text(rng) + b" t%d" % k
        for r in range(int(rng.integers(1, 5))):  # the orig id repeats once per reply
            c.add(b"o%d\t%s\tr%d-%d\t%s" % (k, orig, k, r, _text(rng) + b" r%d" % r), None)
    c.add(c.lines[5], None)  # a whole row repeated (duplicate, dropped)
    tweets = Corpus("tweets")
    for k in range(0, 80, 3):  # single tweets whose ids are also pair originals
        tweets.add(b"o%d\t%s t%d" % (k, _text(rng), k), None)
    stats, rejects, out = run_stage(tmp_path, {"pairs": [c.payload()], "tweets": [tweets.payload()]})
    assert_reconciled(stats, rejects)
    norm = pl.read_parquet(out / "pairs.parquet")
    texts = pl.concat([norm["orig_text"], norm["reply_text"], pl.read_parquet(out / "tweets.parquet")["text"]])
    spm = train_vocab(texts.to_list(), VocabConfig(vocab_size=48, input_sentence_size=0, num_threads=1), tmp_path / "v" / "spm", ["user", "url"])
    cfg = PairsConfig(valid_fraction=0.3, test_fraction=0.3, rows_per_shard=50)
    manifest = build_pair_shards(out / "pairs.parquet", out / "tweets.parquet", Tokenizer.from_file(spm), cfg, 16, tmp_path / "shards", progress=False)
    pairs = pl.read_parquet(out / "pairs.parquet")
    key = b"twilbert-split:" + cfg.seed.to_bytes(8, "little")
    pid_to_orig = dict(zip(_hash64([f"{o}\t{r}" for o, r in zip(pairs["orig_id"], pairs["reply_id"])], key).tolist(), pairs["orig_id"]))
    tw = pl.read_parquet(out / "tweets.parquet")
    pid_to_orig.update(zip(_hash64(tw["id"].to_list(), key).tolist(), tw["id"]))
    splits_of: dict[str, set[str]] = {}
    for split, shards in manifest["shards"].items():
        for sh in shards:
            for pid in pa.ipc.open_file(str(tmp_path / "shards" / sh["file"])).read_all()["pair_id"].to_pylist():
                splits_of.setdefault(pid_to_orig[pid], set()).add(split)
    assert len(splits_of) == 80  # every original tweet made it
    assert all(len(s) == 1 for s in splits_of.values()), {o: s for o, s in splits_of.items() if len(s) > 1}
    assert {next(iter(s)) for s in splits_of.values()} == {"train", "valid", "test"}


# --------------------------------------------------------------------------------------------------
# property: arbitrary bytes never crash ingestion, and the counts always reconcile
# --------------------------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FRAGMENTS = [b"\t", b"\r", b"\r\n", b"\n", b"\xff", b"\xc3", b"\xc3\xb1", b"\x00", b'"', b'""', b"\xef\xbb\xbf", b"@ana", b"#Tag", b"jajaja", b" "]
_line_bytes = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=12)), max_size=30).map(b"".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_line_bytes, kind=st.sampled_from(["pairs", "tweets"]), chunk=st.sampled_from([16, 64, 1 << 20]), max_chars=st.sampled_from([10, 40, 5000]))
def test_arbitrary_bytes_reconcile(tmp_path, body, kind, chunk, max_chars):
    src = tmp_path / f"{kind}.tsv"
    src.write_bytes(body)
    rej = tmp_path / "r.tsv"
    rej.write_text("")
    stats = ingest([src], kind, NormalizeRules().effective(), DropRules(), tmp_path / "o.parquet", rej, header=False, chunk_bytes=chunk, max_chars=max_chars)
    assert stats.reconciles
    n_rejects = len(rej.read_text(encoding="utf-8").splitlines())
    assert n_rejects == sum(stats.rejected.values())
    # Every line is a row, except a blank last line (as in "...\n\n"; interior blank lines are rejects).
    lines = body.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if lines[-1] == b"":
        lines = lines[:-1]  # the final newline ends the last line; it does not start a new one
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    assert stats.rows_in == len(lines)
    assert (stats.rows_in == 0) == (stats.empty_files == [str(src)])


# --------------------------------------------------------------------------------------------------
# task files (twilbert/finetune/data.py: strict, an error names the file and the line)
# --------------------------------------------------------------------------------------------------

from twilbert.finetune.config import TaskConfig  # noqa: E402
from twilbert.finetune.data import TaskDataError, load_task, read_split  # noqa: E402

TASK_HEADER = b"ID\tTEXT\tCLASS"


def _task(tmp_path: Path, **files: bytes) -> TaskConfig:
    names = {}
    for split in ("train", "dev", "test"):
        payload = files.get(split, TASK_HEADER + b"\n%s1\thola que tal\tP\n%s2\tadios amigo\tN\n" % ((split[:2].encode(),) * 2))
        (tmp_path / f"{split}.tsv").write_bytes(payload)
        names[f"{split}_file"] = str(tmp_path / f"{split}.tsv")
    return TaskConfig(**names, categories={"N": 0, "P": 1})


def _rows(*rows: bytes, header: bytes = TASK_HEADER, nl: bytes = b"\n", bom: bool = False) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + b"".join(r + nl for r in (header, *rows))


GOOD_TASK_ROWS = [b"1\thola que tal\tP", b"2\tadios amigo\tN", b"3\tmuy bien todo\tP", b"4\tfatal el dia\tN"]


@pytest.mark.parametrize(
    "rows, line, fragment",
    [
        ([GOOD_TASK_ROWS[0], b"2\tsolo dos campos", GOOD_TASK_ROWS[2]], 3, "has 2 fields, the header has 3"),  # a field short
        ([GOOD_TASK_ROWS[0], b"2", GOOD_TASK_ROWS[2]], 3, "has 1 fields, the header has 3"),  # only an id
        ([GOOD_TASK_ROWS[0], b"2\tuno\tdos\tP"], 3, "has 4 fields, the header has 3"),  # too many
        ([GOOD_TASK_ROWS[0], GOOD_TASK_ROWS[1], b"3\tcon un\ttab dentro\tP"], 4, "has 4 fields"),  # embedded tab
        ([GOOD_TASK_ROWS[0], b"", GOOD_TASK_ROWS[1]], 3, "is blank"),  # interior blank line
        ([GOOD_TASK_ROWS[0], GOOD_TASK_ROWS[1], b""], 4, "is blank"),  # a blank last line
        ([GOOD_TASK_ROWS[0], b"2\t   \tN"], 3, "empty text"),
        ([GOOD_TASK_ROWS[0], b" \thola\tN"], 3, "empty id"),
        ([GOOD_TASK_ROWS[0], b"2\thola\tMAYBE"], 3, "label not in categories"),
        ([GOOD_TASK_ROWS[0], b"2\tho\x00la\tN"], 3, "control character U+0000 in column 'TEXT'"),  # NUL
        ([GOOD_TASK_ROWS[0], b"2\x1b[0m\thola\tN"], 3, "control character U+001B in column 'ID'"),  # escape
        ([GOOD_TASK_ROWS[0], b"2\thola\x7f\tN"], 3, "control character U+007F in column 'TEXT'"),  # DEL
        ([GOOD_TASK_ROWS[0], b"2\tsalto\rde carro\tN"], 3, "stray carriage return (\\r not ending the line) in column 'TEXT'"),
        ([GOOD_TASK_ROWS[0], b"2\tantes del tab\r\tN"], 3, "stray carriage return"),  # polars would drop this \r unseen
        ([GOOD_TASK_ROWS[0], b"2\thola\tN\r\r"], 3, "stray carriage return (\\r not ending the line) in column 'CLASS'"),
        ([GOOD_TASK_ROWS[0], b"2\t" + b"muy largo " * 700 + b"\tN"], 3, "has 7000 characters, more than max_chars (5000"),
    ],
)
def test_task_file_with_a_malformed_row_is_an_error_naming_file_and_line(tmp_path, rows, line, fragment):
    cfg = _task(tmp_path, train=_rows(*rows))
    with pytest.raises(TaskDataError) as err:
        read_split(cfg.train_file, cfg)
    msg = str(err.value)
    assert msg.startswith(f"{cfg.train_file}: ") and f"line {line}" in msg and fragment in msg, msg
    assert "label not in categories: ''" not in msg  # a short row is never taken for an empty label
    assert isinstance(err.value, ConfigError) and "\n" not in msg and "\r" not in msg  # the CLI prints it in one line


def test_task_file_errors_name_every_offending_line_up_to_a_few(tmp_path):
    rows = [GOOD_TASK_ROWS[0], b"2\tcorto", GOOD_TASK_ROWS[2], b"4", b"", GOOD_TASK_ROWS[3]]
    cfg = _task(tmp_path, train=_rows(*rows))
    with pytest.raises(TaskDataError, match=r"train\.tsv: line 3 has 2 fields, the header has 3 .*\(and 2 more short rows: 5, 6\)"):
        read_split(cfg.train_file, cfg)
    nul = [GOOD_TASK_ROWS[0], b"2\ta\x00b\tN", b"3\tc\x01\x02d\tP", GOOD_TASK_ROWS[3]]
    cfg = _task(tmp_path, train=_rows(*nul))
    with pytest.raises(TaskDataError, match=r"train\.tsv: line 3: control character U\+0000 in column 'TEXT' \(and 1 more lines: 4\)"):
        read_split(cfg.train_file, cfg)


def test_a_cr_only_task_file_is_an_error_that_points_at_the_line_ends(tmp_path):
    cfg = _task(tmp_path, train=_rows(*GOOD_TASK_ROWS, nl=b"\r"))  # old Mac line ends: one line for polars
    with pytest.raises(TaskDataError, match=r"train\.tsv: line 1: a stray carriage return .* in the header \(CR-only line ends\?"):
        read_split(cfg.train_file, cfg)
    # a CR-only ending in the data part shows as a row with too many fields, and says why
    cfg = _task(tmp_path, train=TASK_HEADER + b"\n" + b"\r".join(GOOD_TASK_ROWS) + b"\n")
    with pytest.raises(TaskDataError, match=r"train\.tsv: line 2 has 9 fields, the header has 3 \(it holds a \\r: a file with CR-only line ends\?\)"):
        read_split(cfg.train_file, cfg)


def test_task_max_chars_is_the_limit_and_counts_characters_not_bytes(tmp_path):
    long_text = "ñ" * 3000  # 6000 bytes, 3000 characters
    rows = [GOOD_TASK_ROWS[0], b"2\t" + long_text.encode() + b"\tN", b"3\t" + b"x" * 4001 + b"\tP"]
    names = {f"{s}_file": str(tmp_path / f"{s}.tsv") for s in ("train", "dev", "test")}
    (tmp_path / "train.tsv").write_bytes(_rows(*rows))
    assert read_split(tmp_path / "train.tsv", TaskConfig(**names, categories={"N": 0, "P": 1})).texts[1] == long_text
    over = r"train\.tsv: line 3: text in column 'TEXT' has 3000 characters, more than max_chars \(2999; .*\(2 rows over the limit\)"
    with pytest.raises(TaskDataError, match=over):
        read_split(tmp_path / "train.tsv", TaskConfig(**names, categories={"N": 0, "P": 1}, max_chars=2999))
    # the aux text of a pair task too
    (tmp_path / "pair.tsv").write_bytes(b"ID\tTEXT\tTARGET\tCLASS\n1\tcorto\t" + b"y" * 51 + b"\tP\n")
    with pytest.raises(TaskDataError, match=r"pair\.tsv: line 2: text in column 'TARGET' has 51 characters, more than max_chars \(50"):
        read_split(tmp_path / "pair.tsv", TaskConfig(**names, categories={"N": 0, "P": 1}, aux_header="TARGET", max_chars=50))


@pytest.mark.parametrize("payload, fragment", [(b"", "empty file"), (TASK_HEADER + b"\n", "empty split")])
def test_empty_and_header_only_task_files_are_errors(tmp_path, payload, fragment):
    cfg = _task(tmp_path, dev=payload)
    with pytest.raises(TaskDataError, match=rf"dev\.tsv: {fragment}"):
        load_task(cfg)


@pytest.mark.parametrize("variant", ["bom", "crlf", "bom+crlf"])
def test_bom_and_crlf_task_files_read_as_plain_ones(tmp_path, variant):
    payload = _rows(*GOOD_TASK_ROWS, nl=b"\r\n" if "crlf" in variant else b"\n", bom="bom" in variant)
    cfg = _task(tmp_path, train=payload)
    split = read_split(cfg.train_file, cfg)
    assert split.ids == ["1", "2", "3", "4"]  # the BOM is not part of the first id (nor of the header)
    assert split.texts == ["hola que tal", "adios amigo", "muy bien todo", "fatal el dia"]  # no "\r"
    assert split.labels.tolist() == [1, 0, 1, 0]


def test_task_texts_keep_their_quotes_and_no_row_is_swallowed(tmp_path):
    rows = [b'1\t"empieza con comillas\tP', b'2\tella dijo "vale"\tN', b'3\t"""triple"""\tP', b"4\tfin\tN"]
    cfg = _task(tmp_path, train=_rows(*rows))
    split = read_split(cfg.train_file, cfg)
    assert split.texts == ['"empieza con comillas', 'ella dijo "vale"', '"""triple"""', "fin"]


def test_non_utf8_task_file_is_an_error_naming_the_file(tmp_path):
    cfg = _task(tmp_path, test=_rows(*GOOD_TASK_ROWS[:2], b"3\tcaf\xe9 con leche\tP", GOOD_TASK_ROWS[3]))
    with pytest.raises(TaskDataError, match=r"test\.tsv: .*(?i:utf-8)"):
        load_task(cfg)


def test_binary_garbage_task_file_is_an_error(tmp_path):
    rng = np.random.default_rng(4)
    cfg = _task(tmp_path, train=TASK_HEADER + b"\n" + bytes(rng.integers(0x80, 0x100, 4096, dtype=np.uint8)))
    with pytest.raises(TaskDataError, match=r"train\.tsv: "):
        load_task(cfg)


# -- ids repeated across splits (leakage): quarantined by default, or an error -----------------------

from twilbert.finetune.data import data_counts  # noqa: E402


def _leaky(tmp_path: Path, **kw) -> TaskConfig:
    cfg = _task(
        tmp_path,
        train=_rows(b"1\thola que tal\tP", b"2\tadios amigo\tN", b"3\tmuy bien\tP", b"3\tmuy bien otra vez\tP"),  # 3 twice in train: fine
        dev=_rows(b"5\tnada de nada\tN", b"2\tadios amigo\tN", b"6\tbueno\tP"),  # 2 is in train (line 3)
        test=_rows(b"7\totra cosa\tN", b"3\tmuy bien\tP", b"6\tbueno\tP", b"8\tfin\tN", b"2\tadios\tN"),  # 3, 2: train; 6: dev
    )
    return TaskConfig(**{**{k: getattr(cfg, k) for k in ("train_file", "dev_file", "test_file", "categories")}, **kw})


def test_task_ids_repeated_across_splits_are_quarantined_by_default_and_counts_reconcile(tmp_path, capsys):
    cfg = _leaky(tmp_path)
    assert cfg.repeated_ids == "drop"
    splits = load_task(cfg, name="leaky")
    assert splits["train"].ids == ["1", "2", "3", "3"]  # train is never changed
    assert splits["dev"].ids == ["5", "6"] and splits["test"].ids == ["7", "8"]
    assert splits["test"].texts == ["otra cosa", "fin"] and splits["test"].labels.tolist() == [0, 0]
    assert splits["test"].lines.tolist() == [2, 5]
    got = [(Path(r.path).name, r.line, r.id, r.reason, r.also_in.rsplit("/", 1)[-1]) for s in splits.values() for r in s.rejected]
    assert got == [
        ("dev.tsv", 3, "2", "id_in_train", "train.tsv:3"),
        ("test.tsv", 3, "3", "id_in_train", "train.tsv:4"),  # the first of train's two rows with id 3
        ("test.tsv", 4, "6", "id_in_dev", "dev.tsv:4"),
        ("test.tsv", 6, "2", "id_in_train", "train.tsv:3"),
    ]
    counts = data_counts(splits)
    assert counts == {
        "train": {"rows_in": 4, "rows_used": 4, "rejected": {}, "repeated_ids": 1},  # id 3 twice: counted, kept
        "dev": {"rows_in": 3, "rows_used": 2, "rejected": {"id_in_train": 1}, "repeated_ids": 0},
        "test": {"rows_in": 5, "rows_used": 2, "rejected": {"id_in_train": 2, "id_in_dev": 1}, "repeated_ids": 0},
    }
    for c in counts.values():  # rows in = rows used + rows rejected, by reason
        assert c["rows_in"] == c["rows_used"] + sum(c["rejected"].values())
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("tasks.leaky: warning: quarantined 4 rows whose id is in an earlier split"), err
    assert "dev.tsv: 1 row (line 3 id '2' also in" in err[0] and "test.tsv: 3 rows (line 3 id '3' also in" in err[0]
    load_task(cfg, warn=False)
    assert capsys.readouterr().err == ""


def test_task_ids_repeated_across_train_and_test_are_an_error_with_repeated_ids_error(tmp_path):
    cfg = _task(
        tmp_path,
        train=_rows(b"1\thola que tal\tP", b"2\tadios amigo\tN", b"3\tmuy bien\tP"),
        test=_rows(b"7\totra cosa\tN", b"3\tmuy bien\tP"),  # id 3 is also in train (line 4 there)
    )
    cfg = TaskConfig(**{k: getattr(cfg, k) for k in ("train_file", "dev_file", "test_file", "categories")}, repeated_ids="error")
    with pytest.raises(TaskDataError, match=r"test\.tsv: line 3: id '3' is also in .*train\.tsv \(line 4\)") as err:
        load_task(cfg)
    assert "\n" not in str(err.value)
    # dev is checked before test; the message counts the split's repeats when there are several
    (tmp_path / "leaky").mkdir()
    leaky = _leaky(tmp_path / "leaky", repeated_ids="error")
    with pytest.raises(TaskDataError, match=r"dev\.tsv: line 3: id '2' is also in .*train\.tsv \(line 3\); repeated_ids: drop quarantines"):
        load_task(leaky)
    Path(leaky.dev_file).write_bytes(_rows(b"5\tnada de nada\tN"))
    with pytest.raises(TaskDataError, match=r"test\.tsv: line 3: id '3' is also in .*train\.tsv \(line 4\) \(2 rows of this split repeat"):
        load_task(leaky)


def test_repeated_ids_is_validated_and_a_split_quarantined_to_nothing_is_an_error(tmp_path):
    from twilbert.config import from_dict

    with pytest.raises(ConfigError, match=r"repeated_ids"):
        from_dict(TaskConfig, {"train_file": "a", "dev_file": "b", "test_file": "c", "categories": {"N": 0, "P": 1}, "repeated_ids": "keep"})
    cfg = _task(tmp_path, dev=_rows(b"tr1\thola que tal\tP", b"tr2\tadios amigo\tN"))  # every dev id is a train id
    with pytest.raises(TaskDataError, match=r"dev\.tsv: empty split once quarantined: all 2 rows repeat an id of an earlier split"):
        load_task(cfg)


REAL_TASS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tass2020_sentiment_es"


@pytest.mark.skipif(not (REAL_TASS / "train.tsv").is_file(), reason="the shared real data (../shared/data) is not here")
def test_real_tass2020_loads_with_exactly_its_one_leaked_id_quarantined(capsys):
    files = {f"{s}_file": str(REAL_TASS / f"{s}.tsv") for s in ("train", "dev", "test")}
    splits = load_task(TaskConfig(**files, categories={"N": 0, "NEU": 1, "P": 2}), name="tass")
    rejected = [r for s in splits.values() for r in s.rejected]
    assert [(Path(r.path).name, r.line, r.id, r.reason, Path(r.also_in).name) for r in rejected] == [
        ("test.tsv", 368, "es-770453393714348032", "id_in_train", "train.tsv:1274")]
    counts = data_counts(splits)
    assert counts["test"] == {"rows_in": 2465, "rows_used": 2464, "rejected": {"id_in_train": 1, "id_in_dev": 0}, "repeated_ids": 0}
    assert counts["train"]["rows_used"] == 4323 and counts["dev"] == {"rows_in": 479, "rows_used": 479, "rejected": {"id_in_train": 0}, "repeated_ids": 0}
    assert "es-770453393714348032" not in splits["test"].ids
    assert "quarantined 1 row " in capsys.readouterr().err
    with pytest.raises(TaskDataError, match=r"test\.tsv: line 368: id 'es-770453393714348032' is also in .*train\.tsv \(line 1274\)"):
        load_task(TaskConfig(**files, categories={"N": 0, "NEU": 1, "P": 2}, repeated_ids="error"))


# -- invalid UTF-8: the line and the byte -------------------------------------------------------------


def test_non_utf8_task_file_error_names_the_line(tmp_path):
    cfg = _task(tmp_path, test=_rows(*GOOD_TASK_ROWS[:2], b"3\tcaf\xe9 con leche\tP", GOOD_TASK_ROWS[3]))
    with pytest.raises(TaskDataError, match=r"test\.tsv: line 4: invalid UTF-8 at byte 6 \(0xe9; file offset \d+\)") as err:
        load_task(cfg)
    data = Path(cfg.test_file).read_bytes()
    offset = int(str(err.value).split("file offset ")[1].split(")")[0])
    assert data[offset] == 0xE9
    # a multi-byte character cut short at the end of a line (the next line is fine)
    cfg = _task(tmp_path, test=_rows(GOOD_TASK_ROWS[0], b"2\tma\xc3\tN", GOOD_TASK_ROWS[2]))
    with pytest.raises(TaskDataError, match=r"test\.tsv: line 3: invalid UTF-8 at byte 5 \(0xc3"):
        load_task(cfg)

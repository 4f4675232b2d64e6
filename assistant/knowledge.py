"""The knowledge base: documents, their loaders, and the profile that fills placeholders.

A team's knowledge base comes as a Q&A file (CSV or JSON: `question,answer` with optional
`id`, `url`, `category`, `intent`, names in any case; Bitext's
`instruction,intent,category,tags,response` too) or as a folder of Markdown or HTML
help-centre articles, split into sections at their headings.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import requests
import yaml

from assistant.config import Settings

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
# Words that read as a UI element's kind rather than its name: "the Contact Us section".
_KIND_WORDS = {"SECTION", "BUTTON", "OPTION", "LINK", "TAB", "ICON", "MENU", "PAGE", "AREA"}


class KnowledgeBaseError(ValueError):
    """A knowledge-base file that cannot be read as documents."""


@dataclass(frozen=True)
class Document:
    """One knowledge-base entry: a Q&A pair, or one section of an article.

    `question` is the entry's question or the section's title; `response` its answer or text.
    `intent` is empty when the KB carries no intent labels; `url` is where a customer can read
    the entry (empty when unknown). `alternates` are other phrasings of `question` that a team
    keeps so customers' own wording finds the entry ("my card got declined" beside "Why was
    my payment declined?"), as Azure's question answering keeps alternate questions.
    """

    id: str
    question: str
    response: str
    intent: str
    category: str
    tags: str = ""
    url: str = ""
    alternates: tuple[str, ...] = ()

    @property
    def phrasings(self) -> tuple[str, ...]:
        """The entry's question, then its alternates."""
        return (self.question, *self.alternates)

    @property
    def topic(self) -> str:
        """The entry's intent label where the KB has one, else its own id (one entry, one topic)."""
        return self.intent or self.id

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def document_id(question: str, response: str, intent: str) -> str:
    """A short content hash: the same row always gets the same id, across loads and machines."""
    digest = hashlib.sha1(f"{intent}\x1f{question}\x1f{response}".encode(), usedforsecurity=False)
    return digest.hexdigest()[:12]


def _clean(value: object) -> str:
    return "" if value is None else str(value).strip()


QUESTION_COLUMNS = ("question", "instruction", "title")
ANSWER_COLUMNS = ("answer", "response", "text")


def column_name(name: object) -> str:
    """A column name or JSON key as the loaders match it: `\ufeffQuestion ` -> `question`.
    Spreadsheets write `Question,Answer`, and a byte-order mark or a stray space can cling
    to the first or any header cell."""
    return str(name).replace("\ufeff", "").strip().lower()


def _first(row: Mapping[str, object], names: Sequence[str]) -> str:
    return next((_clean(row.get(n)) for n in names if _clean(row.get(n))), "")


ALTERNATE_COLUMNS = ("alternates", "alternate_questions")
_ALTERNATE_SEPARATOR = re.compile(r"\s*(?:\||\n)\s*")


def alternates(value: object, question: str = "") -> tuple[str, ...]:
    """Alternate questions from a cell or JSON value: a list of strings, or one string
    separated by `|` or line breaks. Empty ones, repeats, copies of `question` and anything
    but strings (a JSON number or object) are left out: `"a | b\n| a"` -> `("a", "b")`."""
    if isinstance(value, str):
        parts = _ALTERNATE_SEPARATOR.split(value)
    elif isinstance(value, list):
        parts = [part for part in value if isinstance(part, str)]
    else:
        parts = []
    seen = {question.casefold()}
    kept = []
    for part in map(_clean, parts):
        if part and part.casefold() not in seen:
            seen.add(part.casefold())
            kept.append(part)
    return tuple(kept)


def make_document(row: Mapping[str, object]) -> Document | None:
    """A Document from one row of a Q&A file; None when its question or answer is empty."""
    question = _first(row, QUESTION_COLUMNS)
    response = _first(row, ANSWER_COLUMNS)
    if not question or not response:
        return None
    intent = _clean(row.get("intent"))
    alternate = next((row[n] for n in ALTERNATE_COLUMNS if row.get(n)), "")
    return Document(
        id=_clean(row.get("id")) or document_id(question, response, intent),
        question=question,
        response=response,
        intent=intent,
        category=_clean(row.get("category")),
        tags=_clean(row.get("tags")),
        url=_clean(row.get("url")),
        alternates=alternates(alternate, question),
    )


@dataclass
class LoadReport:
    """What a loader saw besides the documents it kept: rows it dropped, and why. `repeats`
    names each duplicate dropped: (its id, the id of the entry kept in its place)."""

    duplicates: int = 0
    empty: int = 0
    repeats: list[tuple[str, str]] = field(default_factory=list)


def deduplicate(docs: Iterable[Document], report: LoadReport | None = None) -> list[Document]:
    """Drop exact repeats (same question, response and intent), keeping the first, which
    takes the repeats' alternates too; a repeated id gets a numbered suffix, so every kept
    document has its own id."""
    report = report if report is not None else LoadReport()
    seen: dict[tuple[str, str, str], int] = {}
    ids: Counter[str] = Counter()
    unique: list[Document] = []
    for doc in docs:
        key = (doc.question, doc.response, doc.intent)
        if key in seen:
            kept = unique[seen[key]]
            report.duplicates += 1
            report.repeats.append((doc.id, kept.id))
            merged = alternates([*kept.alternates, *doc.alternates], kept.question)
            unique[seen[key]] = replace(kept, alternates=merged)
            continue
        ids[doc.id] += 1
        if ids[doc.id] > 1:
            doc = replace(doc, id=f"{doc.id}-{ids[doc.id]}")
        seen[key] = len(unique)
        unique.append(doc)
    return unique


def _documents(rows: Iterable[Mapping[str, object]], report: LoadReport) -> list[Document]:
    docs = []
    for row in rows:
        doc = make_document(row)
        if doc is None:
            report.empty += 1
        else:
            docs.append(doc)
    return deduplicate(docs, report)


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """A text file's content; raises KnowledgeBaseError naming the file when it is not UTF-8."""
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise KnowledgeBaseError(
            f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 and load it again"
        ) from exc


def read_csv(path: Path, report: LoadReport | None = None) -> list[Document]:
    """Rows of a CSV with a question column (`question`, `instruction` or `title`) and an
    answer column (`answer`, `response` or `text`); `id`, `url`, `category`, `intent`,
    `tags` and `alternates` (other phrasings, separated by `|`) are optional. Column names
    match in any case (`Question,Answer`, as spreadsheets export them). Raises
    KnowledgeBaseError for other columns or another encoding."""
    report = report if report is not None else LoadReport()
    # utf-8-sig: a CSV saved by Excel starts with a byte-order mark.
    reader = csv.DictReader(io.StringIO(read_text(path, "utf-8-sig"), newline=""))
    found = reader.fieldnames or []
    reader.fieldnames = [column_name(name) for name in found]
    columns = set(reader.fieldnames)
    if not columns & set(QUESTION_COLUMNS) or not columns & set(ANSWER_COLUMNS):
        raise KnowledgeBaseError(
            f"{path}: expected question,answer columns (or Bitext's instruction,response); "
            f"found {sorted(found)}"
        )
    return _documents(reader, report)


def write_csv(path: Path, docs: Iterable[Document]) -> None:
    """Write documents in the Bitext format, readable by `read_csv` (which has no place for
    alternate questions: `eval split` writes Bitext rows)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "intent", "category", "tags", "response"])
        for doc in docs:
            writer.writerow([doc.question, doc.intent, doc.category, doc.tags, doc.response])


def read_json(path: Path, report: LoadReport | None = None) -> list[Document]:
    """A JSON list of objects with the same keys as `read_csv`'s columns, in any case."""
    report = report if report is not None else LoadReport()
    try:
        data = json.loads(read_text(path, "utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise KnowledgeBaseError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise KnowledgeBaseError(f"{path}: expected a JSON list of document objects")
    rows = [{column_name(key): value for key, value in item.items()} for item in data]
    docs = _documents(rows, report)
    if data and not docs:
        raise KnowledgeBaseError(f"{path}: no object has both a question and an answer")
    return docs


def read_file(
    path: Path, report: LoadReport | None = None, cache_dir: Path | None = None
) -> list[Document]:
    """A Q&A file (`.json`, else CSV) or a folder of articles (see `articles.read_folder`,
    which keeps its parses in `cache_dir`)."""
    report = report if report is not None else LoadReport()
    if path.is_dir():
        from assistant.articles import read_folder

        return deduplicate(read_folder(path, cache_dir), report)
    if not path.is_file():
        raise KnowledgeBaseError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".json":
        return read_json(path, report)
    return read_csv(path, report)


def cache_key(url: str) -> str:
    return hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()[:10]


def download(url: str, cache_dir: Path, timeout: float) -> Path:
    """Fetch the dataset once into `cache_dir`; later calls reuse the cached copy. The name
    carries a hash of the URL: two KBs that share a file name never share a cache entry."""
    name = Path(url.split("?")[0]).name or "kb.csv"
    target = cache_dir / f"{cache_key(url)}-{name}"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    partial = target.with_suffix(".part")
    partial.write_bytes(response.content)
    partial.replace(target)
    return target


@dataclass(frozen=True)
class KnowledgeBase:
    """The documents of one source, and what loading them dropped."""

    documents: list[Document]
    source: str
    report: LoadReport = field(default_factory=LoadReport)

    def __len__(self) -> int:
        return len(self.documents)


def _read(path: Path, source: str, cache_dir: Path | None = None) -> KnowledgeBase:
    report = LoadReport()
    docs = read_file(path, report, cache_dir)
    if not docs:
        # An empty KB would serve, and decline every question: refused where it is loaded.
        skipped = f" ({report.empty} rows without one skipped)" if report.empty else ""
        raise KnowledgeBaseError(
            f"{path}: no entries; a knowledge base needs at least one question with its "
            f"answer{skipped}"
        )
    return KnowledgeBase(docs, source, report)


def load(
    source: str, *, demo: Path, cache_dir: Path, url: str, timeout: float = 10.0
) -> KnowledgeBase:
    """Load a KB from a file or folder path, a URL, `demo`, or `auto` (the cached or
    downloaded dataset, else the demo KB). Raises KnowledgeBaseError for a source that
    cannot be read or holds no entries.

    `auto` never fails for want of network: the bundled demo KB is the floor.
    """
    if source == "demo":
        return _read(demo, "demo")
    if source.startswith(("http://", "https://")):
        return _read(download(source, cache_dir, timeout), source)
    if source != "auto":
        return _read(Path(source), source, cache_dir)
    try:
        path = download(url, cache_dir, timeout)
        return _read(path, str(path))
    except (requests.RequestException, OSError, ValueError) as exc:
        log.info(
            "Bitext dataset unavailable (%s): answering from the bundled demo KB. Set KB_PATH "
            "to your own knowledge base, or KB_PATH=demo to skip the download",
            type(exc).__name__,
        )
        return _read(demo, "demo")


def humanize(name: str) -> str:
    """`CONTACT_US_SECTION` -> `Contact Us section`: readable when the profile has no value."""
    words = [w for w in re.split(r"[_\s]+", name.strip()) if w]
    if not words:
        return ""
    kind = words.pop().lower() if len(words) > 1 and words[-1].upper() in _KIND_WORDS else None
    label = " ".join(w.capitalize() for w in words)
    return f"{label} {kind}" if kind else label


def placeholder_key(name: str) -> str:
    """`customer support phone` -> `CUSTOMER_SUPPORT_PHONE`: how the profile keys a name."""
    return re.sub(r"\s+", "_", name.strip()).upper()


_REPEATED_KIND = re.compile(rf"\b({'|'.join(sorted(_KIND_WORDS))}) \1\b", re.IGNORECASE)
# "I'm the {{COMPANY_NAME}} support assistant" for a company named "The Daily Ledger".
_DOUBLED_ARTICLE = re.compile(r"\bthe\s+(the)\b", re.IGNORECASE)


# What replies call a company whose profile gives no name.
UNNAMED = "our service"


@dataclass(frozen=True)
class Profile:
    company_name: str = UNNAMED
    placeholders: Mapping[str, str] = field(default_factory=dict)

    @property
    def named(self) -> bool:
        """Whether the profile gives the company's name (else replies say UNNAMED)."""
        return self.company_name != UNNAMED

    def value(self, name: str) -> str:
        """The profile's value for placeholder `name`, else the name as words."""
        key = placeholder_key(name)
        return self.placeholders.get(key) or humanize(key)

    def filled(self, name: str) -> bool:
        """Whether the profile gives placeholder `name` a value (an empty one is none)."""
        return bool(self.placeholders.get(placeholder_key(name), "").strip())

    def fill(self, text: str) -> str:
        """Replace every `{{NAME}}`; a stray brace pair never reaches a customer."""
        filled = _PLACEHOLDER.sub(lambda m: self.value(m.group(1)), text)
        # "the {{CONTACT_US_SECTION}} section" would otherwise read "Contact Us section section".
        filled = _REPEATED_KIND.sub(r"\1", filled)
        filled = _DOUBLED_ARTICLE.sub(r"\1", filled)
        return filled.replace("{{", "").replace("}}", "")


def placeholders(docs: Iterable[Document]) -> Counter[str]:
    """Every `{{PLACEHOLDER}}` name in the documents' answers and questions, with its count."""
    found: Counter[str] = Counter()
    for doc in docs:
        for text in (*doc.phrasings, doc.response):
            found.update(placeholder_key(m) for m in _PLACEHOLDER.findall(text))
    return found


def load_profile(path: Path) -> Profile:
    """The business profile at `path` (see data/business-profile.yaml); an empty one when
    the file is missing."""
    if not path.is_file():
        log.warning("No business profile at %s; placeholders will be rendered as words", path)
        return Profile()
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    # `CUSTOMER_SUPPORT_PHONE:` with nothing after it is YAML's null: no value, not "None".
    placeholders = {
        str(k).upper(): "" if v is None else str(v)
        for k, v in (data.get("placeholders") or {}).items()
    }
    return Profile(str(data.get("company_name") or UNNAMED), placeholders)


def read_lines(path: Path) -> list[str]:
    """One text per line; blank lines and `#` comments are skipped. A missing file is empty."""
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def load_configured(settings: Settings, source: str | None = None) -> KnowledgeBase:
    return load(
        source or settings.kb_source,
        demo=settings.demo_kb,
        cache_dir=settings.cache_dir,
        url=settings.kb_url,
        timeout=settings.download_timeout,
    )

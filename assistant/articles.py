"""Help-centre articles as knowledge-base entries: a folder of Markdown or HTML files, each
split into sections at its headings.

A section's id is `<path relative to the folder>#<GitHub-style slug of its heading>`
(`billing.md#refunds`), its question is the heading, its text the section's body and its
category the article's title. A Markdown file's YAML front matter may give `title`, `url` and
`category`; an HTML file's `<title>` (or `<h1>`, see `html_pages.read_page`),
`<link rel="canonical">` and `<meta name="category">` do the same. Markdown front
matter may also give sections alternate questions (customers' own wording, as a CSV's
`alternates` column does), under the section's anchor:

    alternates:
      payment-methods: ["do you take paypal?", "can I pay with apple pay?"]

An `alternates.yaml` at the folder's top gives any section (an HTML page's too) alternate
questions by id:

    billing/payments.html#payment-methods: ["do you take paypal?"]
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import joblib
import yaml
from markdown_it import MarkdownIt
from markdown_it.common.utils import normalizeReference

from assistant.html_pages import read_page
from assistant.knowledge import Document, KnowledgeBaseError, alternates, read_text

log = logging.getLogger(__name__)

MARKDOWN = {".md", ".markdown"}
HTML = {".html", ".htm"}
# Alternate questions for any article's sections, by id: the way to add them to HTML pages.
ALTERNATES_FILE = "alternates.yaml"
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)
# What a link's text never reaches into: a backslash escape, a code span, an autolink
# ("<https://x/[fees]>"), an HTML tag or comment, as CommonMark reads them
# (https://spec.commonmark.org/0.31.2/#raw-html).
_VERBATIM_SPAN = re.compile(
    r"\\.|(`+).*?(?<!`)\1(?!`)|<[A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*>|<!--.*?-->"
    r"|</[A-Za-z][A-Za-z0-9-]*\s*>"
    r"|<[A-Za-z][A-Za-z0-9-]*(?:\s+[A-Za-z_:][\w.:-]*(?:\s*=\s*(?:[^\s\"'=<>`]+|'[^']*'|\"[^\"]*\"))?)*\s*/?>",
    re.DOTALL,
)
# A section's answer holds its subsections up to this many words: a longer one is a
# chapter ("Billing" over ten questions), each of whose parts answers on its own.
_SUBSECTION_WORDS = 250
_PLAIN = re.compile(r"[^\[\\`<]+")
_PLAIN_PAIRS = re.compile(r"[^\[\]()\\`<]+")
_LABEL = re.compile(r"\[((?:\\.|[^\[\]\\])*)\]")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@dataclass
class Section:
    """A heading, its level (1 for `#`, 0 before any heading) and the lines under it; `code`
    holds the indices of lines that are code."""

    heading: str
    lines: list[str] = field(default_factory=list)
    code: set[int] = field(default_factory=set)
    level: int = 0


@dataclass
class Article:
    """One parsed file: its title, URL, category and sections (the text before the first
    heading is a section named after the article), and alternate questions by section anchor
    (a list of strings, or one string separated by `|`)."""

    title: str
    url: str = ""
    category: str = ""
    sections: list[Section] = field(default_factory=list)
    alternates: dict[str, object] = field(default_factory=dict)


def parse_markdown(text: str, fallback_title: str) -> Article:
    """A Markdown file as an Article: its YAML front matter (`title`, `url`, `category`,
    `alternates`), then its sections (see `_sections`). Raises yaml.YAMLError when the front
    matter is not valid YAML."""
    meta: dict = {}
    text = text.removeprefix("\ufeff")
    match = _FRONT_MATTER.match(text)
    # Front matter is a YAML mapping: a file opening with a rule ("---") over text that is
    # not one keeps its text.
    loaded = yaml.safe_load(match.group(1)) if match else None
    if match and isinstance(loaded, dict):
        meta = loaded
        text = text[match.end() :]
    article = Article(
        str(meta.get("title") or ""), str(meta.get("url") or ""), str(meta.get("category") or "")
    )
    extra = meta.get("alternates")
    if isinstance(extra, dict):
        article.alternates = {str(anchor).lstrip("#"): value for anchor, value in extra.items()}
    return _sections(text, article, fallback_title)


def _sections(text: str, article: Article, fallback_title: str) -> Article:
    """Split Markdown `text` at its headings into `article.sections`, each line as it should
    read in an answer; the article's title falls back to its first heading,
    then to `fallback_title`."""
    # As the parser numbers lines: it reads "\r\n" and "\r" as "\n" and no other character
    # as a line break (str.splitlines would also break at U+2028 or a form feed, and every
    # heading after one would start on the wrong line).
    lines = re.sub(r"\r\n?", "\n", text).split("\n")
    parser = MarkdownIt("commonmark").enable("table")
    # A writer's HTML comment is a note to the team ("<!-- check with legal -->"), never an
    # answer's text; in code it is the code's. (Parsing twice costs a large page seconds.)
    if "<!--" in text:
        lines = _without_comments(lines, _rows(parser.parse(text), "fence", "code_block"))
        text = "\n".join(lines)
    env: dict = {}
    tokens = parser.parse(text, env)
    references = env.get("references", {})
    definitions = {
        row
        for ref in [*references.values(), *env.get("duplicate_refs", ())]
        for row in range(*ref["map"])
    }
    # Heading lines come from the parser, so a "#" inside a code block is not a heading, and
    # a heading's name is its text: "## [Refunds](/refunds)" is "Refunds", as GitHub slugs it.
    headings = {
        token.map[0]: " ".join(
            "".join(
                " " if child.type in ("softbreak", "hardbreak") else child.content
                for child in tokens[i + 1].children or ()
                if child.type in ("text", "code_inline", "softbreak", "hardbreak")
            ).split()
        )
        for i, token in enumerate(tokens)
        if token.type == "heading_open" and token.map
    }
    ends = {t.map[0]: t.map[1] for t in tokens if t.type == "heading_open" and t.map}
    levels = {t.map[0]: int(t.tag[1]) for t in tokens if t.type == "heading_open" and t.map}
    # A paragraph's later lines continue its first, as a renderer joins them: a writer who
    # wraps at 80 columns writes one sentence over two lines, and the answer must not break
    # it ("Cancel⏎Plus"). Each list item, table row, line of code and HTML block keeps its
    # own line: none of them is a paragraph's continuation.
    continuing = _rows(tokens, "paragraph_open", first=False)
    verbatim = _rows(tokens, "fence", "code_block")
    current = Section("")
    row = 0
    broken = False
    while row < len(lines):
        if row in headings:
            article.sections.append(current)
            current = Section(headings[row], level=levels[row])
            row = ends[row]
            continue
        if row in definitions:
            row += 1
            continue
        previous = current.lines[-1] if current.lines else ""
        line = lines[row]
        if row in verbatim:
            current.code.add(len(current.lines))
            current.lines.append(line.rstrip())
        elif row in continuing and previous.strip() and not broken:
            # A quoted paragraph's later lines repeat its ">" markers.
            current.lines[-1] = f"{previous.rstrip()} {_tidy(line)[1]}"
        elif line.strip() or previous.strip():
            # Indentation and quote markers are structure (a nested item, indented code, a
            # list in a quote); runs of blank lines are one.
            current.lines.append("".join(_tidy(line)) if line.strip() else "")
        # Two trailing spaces or a backslash: a hard break; the next line is not joined on.
        broken = line.endswith(("  ", "\\"))
        row += 1
    article.sections.append(current)
    for section in article.sections:
        while section.lines and not section.lines[-1].strip():
            section.lines.pop()
        if references:
            # After a paragraph's lines are joined: a link's text may wrap.
            section.lines = [
                line if i in section.code else _inline_references(line, references)
                for i, line in enumerate(section.lines)
            ]
    first = next((s.heading for s in article.sections if s.heading), "")
    article.title = article.title or first or fallback_title
    return article


def _inline_references(text: str, references: dict[str, dict]) -> str:
    """`text` with its reference links ("[fees][1]", "[fees][]", "[fees]") written inline: a
    section is answered on its own, and the definitions ("[1]: https://…") sit at the
    article's end, in another section. Link text may hold brackets, code and other links
    ("[![build][img]][ci]"). The `references` are markdown-it's, by normalised label; an
    unknown label stays as written. Follows CommonMark's link syntax
    (https://spec.commonmark.org/0.31.2/#links), not its precedence rules; linear in the
    text's length."""
    return _rewritten(text, 0, len(text), _pairs(text), references)


def _rewritten(
    text: str, start: int, end: int, pairs: dict[int, int], references: dict[str, dict]
) -> str:
    """`text[start:end]` with its reference links inline; `pairs` maps each bracket's index
    to its closing one's (`_pairs`)."""
    out: list[str] = []
    at = start
    while at < end:
        span = _PLAIN.match(text, at, end) or _VERBATIM_SPAN.match(text, at, end)
        close = pairs.get(at, end) if text[at] == "[" else end
        if span or close >= end:
            out.append(span.group() if span else text[at])
            at = span.end() if span else at + 1
            continue
        inner = _rewritten(text, at + 1, close, pairs, references)
        after = close + 1
        if after < end and text[after] == "(":
            # An inline link keeps its destination as written.
            after = min(pairs.get(after, after - 1), end - 1) + 1
            out.append(f"[{inner}]{text[close + 1 : after]}")
            at = after
            continue
        label = _LABEL.match(text, after, end)
        # Definitions are no section's lines: a "[fees]: …" left is text with a link in it.
        written = label.group(1) if label and label.group(1) else text[at + 1 : close]
        reference = references.get(normalizeReference(written))
        if reference is None:
            out.append(f"[{inner}]")
            at = after
            continue
        href = reference["href"]
        out.append(f"[{inner}](<{href}>)" if re.search(r"[\s()]", href) else f"[{inner}]({href})")
        at = label.end() if label else after
    return "".join(out)


def _pairs(text: str) -> dict[int, int]:
    """The index of each bracket and parenthesis of `text` that is closed, to its closing
    one's, past escapes, code spans and HTML (`_VERBATIM_SPAN`); one pass."""
    pairs: dict[int, int] = {}
    open_at: dict[str, list[int]] = {"[": [], "(": []}
    closing = {"]": "[", ")": "("}
    at = 0
    while at < len(text):
        span = _PLAIN_PAIRS.match(text, at) or _VERBATIM_SPAN.match(text, at)
        if span:
            at = span.end()
            continue
        char = text[at]
        if char in open_at:
            open_at[char].append(at)
        elif char in closing and open_at[closing[char]]:
            pairs[open_at[closing[char]].pop()] = at
        at += 1
    return pairs


def _tidy(line: str) -> tuple[str, str]:
    """A Markdown line as its leading indentation and quote markers, and its text with each
    run of spaces as one; a hard break (two trailing spaces) keeps its spaces, for a
    renderer."""
    indent = re.match(r"[\s>]*", line).group()
    text = " ".join(line[len(indent) :].split())
    return indent, f"{text}  " if text and line.endswith("  ") else text


def _without_comments(lines: list[str], verbatim: set[int]) -> list[str]:
    """`lines` without HTML comments (`<!-- ... -->`, over several lines too) outside the
    `verbatim` rows; a line keeps its place, empty where a comment filled it."""
    out = []
    inside = False
    for row, line in enumerate(lines):
        if row in verbatim:
            out.append(line)
            continue
        kept, rest = "", line
        while rest:
            if inside:
                end = rest.find("-->")
                rest, inside = ("", True) if end < 0 else (rest[end + 3 :], False)
            else:
                start = rest.find("<!--")
                if start < 0:
                    kept, rest = kept + rest, ""
                else:
                    kept, rest, inside = kept + rest[:start], rest[start + 4 :], True
        if kept != line:
            # "5 days <!-- check -->." reads "5 days.", and the line keeps its indentation.
            body = re.sub(r" (?=[.,;:!?)])", "", " ".join(kept.split()))
            kept = re.match(r"\s*", line).group() + body if body else ""
        out.append(kept)
    return out


def _rows(tokens: list, *types: str, first: bool = True) -> set[int]:
    """The source rows (0-based) of the block tokens of `types`; with `first=False`, each
    block's rows after its first."""
    return {
        row
        for token in tokens
        if token.type in types and token.map
        for row in range(token.map[0] + (0 if first else 1), token.map[1])
    }


def parse_html(text: str, fallback_title: str) -> Article:
    """An HTML page as an Article: its article text as Markdown (`html_pages.read_page`),
    split at its headings as a Markdown file is."""
    page = read_page(text)
    return _sections(page.markdown, Article(page.title, page.url, page.category), fallback_title)


def article_documents(article: Article, relative: str) -> list[Document]:
    """The article's sections with text, as Documents."""
    docs = []
    anchors: Counter[str] = Counter()
    for index, section in enumerate(article.sections):
        body = "\n".join(section.lines)
        if body:
            body = "\n\n".join([body, *_subsections(article.sections, index)])
        if not body:
            # A heading with no text of its own ("# Billing" over its "## Refunds") is the
            # article's structure, not an empty entry.
            continue
        anchor = slug(section.heading) if section.heading else ""
        if anchor:
            # GitHub numbers repeated anchors: "faq", "faq-1", "faq-2".
            seen = anchors[anchor]
            anchors[anchor] += 1
            anchor = f"{anchor}-{seen}" if seen else anchor
        doc_id = f"{relative}#{anchor}" if anchor else relative
        url = f"{article.url}#{anchor}" if article.url and anchor else article.url
        question = section.heading or article.title
        docs.append(
            Document(
                id=doc_id,
                question=question,
                response=body,
                intent="",
                category=article.category or article.title,
                url=url,
                alternates=alternates(article.alternates.get(anchor), question) if anchor else (),
            )
        )
    unknown = set(article.alternates) - {doc.id.partition("#")[2] for doc in docs}
    if unknown:
        log.warning(
            "%s: alternates for %s, which name no section (a section's anchor is its id after "
            "'#'; `assistant ingest --kb FOLDER --ids` lists them)",
            relative,
            ", ".join(sorted(unknown)),
        )
    return docs


def _subsections(sections: list[Section], index: int) -> list[str]:
    """The text of the sections under `sections[index]` (deeper headings up to the next of
    its level or higher), each under its heading in bold, when the section is not the
    article's title (level 2 or deeper), none of them is a question of its own (a heading
    ending in "?": "Billing" over its FAQ) and they hold at most _SUBSECTION_WORDS words;
    else none. A subsection with no text adds nothing. "How do I cancel?" over "On the web"
    and "On iPhone" answered with its one opening line, and the steps were entries without
    the question."""
    section = sections[index]
    if section.level < 2:
        return []
    under = []
    for sub in sections[index + 1 :]:
        if sub.level <= section.level:
            break
        if sub.lines:
            under.append(sub)
    if any(sub.heading.rstrip().endswith("?") for sub in under):
        return []
    parts = [f"**{sub.heading}**\n\n" + "\n".join(sub.lines) for sub in under]
    if sum(len(part.split()) for part in parts) > _SUBSECTION_WORDS:
        return []
    return parts


@functools.cache
def _parser_version() -> str:
    """A hash of the parsers' code and the libraries they call: a cached parse made by other
    code is never read back."""
    parts = [Path(__file__).read_bytes(), Path(inspect.getfile(read_page)).read_bytes()]
    for package in ("beautifulsoup4", "lxml", "markdownify", "markdown-it-py", "pyyaml"):
        parts.append(importlib.metadata.version(package).encode())
    return hashlib.sha1(b"\0".join(parts), usedforsecurity=False).hexdigest()


def _parse(text: str, digest: str, fallback_title: str, html: bool, version: str) -> Article:
    """One file's Article. `digest` (of `text`) and `version` (`_parser_version`) are not
    read: they key the cache, which keeps them in place of the text."""
    return (parse_html if html else parse_markdown)(text, fallback_title)


def _parser(cache_dir: Path | None, files: int) -> Callable[[str, str, bool], Article]:
    """`_parse(text, fallback_title, html)`, its results kept in `cache_dir` where given, of
    which the `files` * 2 + 100 most recently read are kept. A cache folder that cannot be
    made is logged and costs only the time; one that fails while a result is written,
    joblib warns of (CacheWarning) and returns the result."""
    if cache_dir is None:
        return lambda text, title, html: _parse(text, "", title, html, "")
    try:
        memory = joblib.Memory(cache_dir / "articles", verbose=0)
        memory.reduce_size(items_limit=files * 2 + 100)
        cached = memory.cache(_parse, ignore=["text"])
    except OSError as exc:
        log.warning("could not keep parsed articles in %s (%s)", cache_dir, exc)
        return _parser(None, files)
    version = _parser_version()
    return lambda text, title, html: cached(
        text, hashlib.sha256(text.encode()).hexdigest(), title, html, version
    )


def read_folder(folder: Path, cache_dir: Path | None = None) -> list[Document]:
    """Every Markdown and HTML file under `folder`, in path order, split into sections.
    With `cache_dir`, each file's parse is kept there (`_parser`: joblib.Memory, keyed by a
    digest of its text, the fallback title, whether it is HTML and the parsers' version), so
    a restart parses only changed files: 60 pages, 1.2 MB of HTML, took 5.6 s to parse and
    0.18 s to read back. Raises KnowledgeBaseError naming the file when the folder holds no
    such file, or a file is not UTF-8, or its front matter not YAML, or it cannot be parsed
    (tags nested past Python's recursion limit)."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MARKDOWN | HTML
    )
    if not files:
        raise KnowledgeBaseError(f"{folder}: no Markdown (.md) or HTML (.html) articles found")
    parse = _parser(cache_dir, len(files))
    docs = []
    for path in files:
        relative = path.relative_to(folder).as_posix()
        html = path.suffix.lower() in HTML
        text = read_text(path)
        try:
            title = path.stem.replace("-", " ").replace("_", " ")
            article = parse(text, title, html)
        # One file's error names the file and stops the load, as a CSV's bad row does: a
        # loader that skipped it would serve a help centre missing its articles.
        except yaml.YAMLError as error:
            raise KnowledgeBaseError(f"{path}: front matter is not valid YAML ({error})") from None
        except (RecursionError, ValueError) as error:
            raise KnowledgeBaseError(
                f"{path}: cannot be read as an article ({error.__class__.__name__}: {error})"
            ) from None
        docs += article_documents(article, relative)
    return _with_folder_alternates(docs, folder / ALTERNATES_FILE)


def _with_folder_alternates(docs: list[Document], path: Path) -> list[Document]:
    """`docs` with the alternate questions `path` gives them by id (a YAML mapping of entry
    id to a list of questions, or one string separated by `|`), after any from front matter;
    ids naming no entry are logged. Raises KnowledgeBaseError when `path` is not such a
    mapping."""
    if not path.is_file():
        return docs
    try:
        loaded = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as error:
        raise KnowledgeBaseError(f"{path}: not valid YAML ({error.__class__.__name__})") from None
    if not isinstance(loaded, dict):
        raise KnowledgeBaseError(f"{path}: expected a mapping of entry id to questions")
    extra = {str(key): value for key, value in loaded.items()}
    unknown = set(extra) - {doc.id for doc in docs}
    if unknown:
        log.warning(
            "%s: alternates for %s, which name no entry (`assistant ingest --kb FOLDER --ids` "
            "lists the ids)",
            path.name,
            ", ".join(sorted(unknown)),
        )
    return [
        replace(
            doc,
            alternates=alternates([*doc.alternates, *alternates(extra[doc.id])], doc.question),
        )
        if doc.id in extra
        else doc
        for doc in docs
    ]

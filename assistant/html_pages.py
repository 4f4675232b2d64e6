"""Help-centre HTML pages as Markdown: the page's article, without the furniture a CMS theme
puts around it, converted by markdownify (`articles.parse_html` then splits it at headings)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin

from bs4 import BeautifulSoup, NavigableString, Tag
from markdownify import MarkdownConverter, should_remove_whitespace_outside

HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
# What opens a Markdown block at a line's start: a heading, a quote, a list item, a setext
# underline, a code fence, a thematic break, a link reference definition; a numbered item
# (escaped after its number); and, anywhere, "<" before what Markdown reads as an HTML tag
# ("What is <Premium>?" lost its word).
_BLOCK_START = re.compile(
    r"^(\s*)(#{1,6}(?=\s|$)|>|[-+*](?=\s)|=+\s*$|-+\s*$|~{3,}|`{3,}|(?:\*\s*){3,}$|(?:_\s*){3,}$"
    r"|\[(?=[^\]]*\]:))",
    re.MULTILINE,
)
_NUMBER_START = re.compile(r"^(\s*\d+)([.)])(?=\s|$)", re.MULTILINE)
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
# Page furniture a help-centre theme (Zendesk Guide, WordPress, Intercom) puts around and
# inside an article: none of it answers a question, and as text it became entries of its own
# ("Updated 3 months ago", "Related articles", a breadcrumb trail) and the tail of every
# page's last section ("Was this article helpful? Yes No").
_FURNITURE = ["script", "style", "noscript", "template", "nav", "form", "button", "footer"]
# Media an answer in words cannot show (a <video>'s fallback text reads "Your browser does not
# support video").
_MEDIA = ["svg", "video", "audio", "iframe", "picture", "object", "embed", "canvas"]
# How those themes' class words for such furniture begin ("article-meta", "breadcrumbs",
# "article-votes", "share-buttons", "sharedaddy", "jp-relatedposts", "recently-viewed",
# "comment-section", "kb-article-feedback", "ez-toc-container"; and "table-of-contents"
# whole). Not ids: MkDocs, Docusaurus and Hugo give every heading its slug as an id
# ("share-a-playlist").
_FURNITURE_WORDS = (
    "breadcrumb", "meta", "vote", "share", "sharing", "social", "related", "comment",
    "sidebar", "sidenav", "recent", "feedback", "toc",
)  # fmt: skip
# Furniture is small: an element holding this share of the article's text or more is its
# content, whatever its class ("layout-with-sidebar" around the whole article). It also holds
# no heading: an article's sections do ("layout-with-sidebar__content", "post-meta-wrapper").
_FURNITURE_SHARE = 0.5
# ...unless it is navigation: links under its own heading (Zendesk's "Articles in this
# section" sidebar, "Related articles", "Recently viewed articles"; Jetpack's related posts,
# each link a heading of its own), whose words past that heading are mostly link text; or it
# holds a discussion (a "comment-section" with its "Comments" heading).
_LINK_SHARE = 0.7
# ...or it is a widget: a heading over a control or two (Jetpack's "Like this:" over "Like
# Loading..."), this many words at most and no paragraph, item or cell (a short answer's).
_WIDGET_WORDS = 3
_TEXT_BLOCKS = ["p", "li", "td", "dd"]
# A link or control a theme marks as a button ("Follow", "Subscribe") or as navigation; a
# button's label is this many words at most, else it opens content (an accordion's question).
_ROLES = ["button", "navigation", "search", "toolbar"]
_BUTTON_WORDS = 3


@dataclass
class Page:
    """One HTML page: its title, canonical URL, category and article text as Markdown."""

    title: str
    url: str
    category: str
    markdown: str


class _Markdown(MarkdownConverter):
    """markdownify's converter, with code and table cells kept intact in Markdown, the page's
    text escaped where Markdown would read it as markup, and images left out."""

    def convert_pre(self, el, text: str, parent_tags: set[str]) -> str:
        # A fence longer than any run of backticks in the code, which would close it early.
        block = super().convert_pre(el, text, parent_tags)
        longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
        if not longest:
            return block
        fence = "`" * (longest + 1)
        return f"\n\n{fence}{block.strip()[3:-3]}{fence}\n\n"

    def convert_img(self, el, text: str, parent_tags: set[str]) -> str:
        # An answer is words: a screenshot's Markdown ("![cancel.png](...)") is noise in it.
        return ""

    def process_text(self, el, parent_tags=None) -> str:
        self._line_start = _starts_line(el)
        return super().process_text(el, parent_tags)

    def escape(self, text: str, parent_tags: set[str]) -> str:
        # The page's text is text: where a line opens like a Markdown block ("# of screens
        # depends on your plan", "1. Open settings." with no list, after a <br> too) it is
        # escaped, as a writer would, or it became a heading and was lost. Mid-line it is
        # not ("Account > Membership" read "Account \\> Membership").
        text = _TAG_START.sub(r"\\<", super().escape(text, parent_tags))
        first, newline, rest = text.partition("\n")
        if self._line_start:
            first = _NUMBER_START.sub(r"\1\\\2", _BLOCK_START.sub(r"\1\\\2", first))
        rest = _NUMBER_START.sub(r"\1\\\2", _BLOCK_START.sub(r"\1\\\2", rest))
        return first + newline + rest

    def convert_td(self, el, text: str, parent_tags: set[str]) -> str:
        return super().convert_td(el, text.replace("|", "\\|"), parent_tags)

    def convert_th(self, el, text: str, parent_tags: set[str]) -> str:
        return super().convert_th(el, text.replace("|", "\\|"), parent_tags)


def _starts_line(node) -> bool:
    """Whether the text `node` begins a line of the Markdown: what stands before it in its
    block prints nothing (a comment, an `<img>`, an empty anchor) or ends in a `<br>`. When
    unsure it says yes: escaping a mark mid-line only shows a backslash, and a "#" left at a
    line's start makes a heading of the text."""
    while True:
        previous = node.previous_sibling
        while previous is not None and _prints_nothing(previous):
            previous = previous.previous_sibling
        if previous is not None:
            break
        node = node.parent
        if node is None or should_remove_whitespace_outside(node):
            return True
    if not isinstance(previous, Tag):
        return False
    if previous.name == "br" or should_remove_whitespace_outside(previous):
        return True
    for last in reversed(list(previous.descendants)):
        if isinstance(last, Tag) and (last.name == "br" or should_remove_whitespace_outside(last)):
            return True
        if type(last) is NavigableString and last.strip():
            return False
    return True


def _labels_content(tag: Tag) -> bool:
    """Whether a button (`<button>`, `role="button"`) is content: in or around a heading, or
    longer than a control's label (an accordion's "How do I cancel my plan?" toggle)."""
    return (tag.name == "button" or tag.get("role") == "button") and (
        tag.find_parent(HEADINGS) is not None
        or tag.find(HEADINGS) is not None
        or len(tag.get_text().split()) > _BUTTON_WORDS
    )


def _prints_nothing(node) -> bool:
    """Whether `node` adds no text to its line: a comment, white space, or an element with no
    text and no line break."""
    if isinstance(node, Tag):
        return not node.get_text().strip() and node.name != "br" and node.find("br") is None
    return type(node) is not NavigableString or not node.strip()


def _furniture(tag: Tag, words: int) -> bool:
    """Whether `tag` is page furniture: a page header or an `<aside>` outside any `<article>`
    (one inside is the article's own callout) holding no heading, or an element with a class
    word beginning as one of _FURNITURE_WORDS does, holding no heading, or navigation, a
    discussion or a widget (see _LINK_SHARE, _WIDGET_WORDS) under headings none of which is
    an `<h1>`; each small, under _FURNITURE_SHARE of the article's `words`. Nothing in code
    is furniture (a highlighter's "hljs-comment"), and hidden elements are not: a
    collapsible FAQ's answers are hidden until opened."""
    names = " ".join(tag.get("class", [])).lower()
    classes = re.split(r"[^a-z]+", names)
    marked = "table-of-contents" in names or any(
        word.startswith(_FURNITURE_WORDS) for word in classes if word
    )
    # Only a marked element's subtree is searched: every element's would cost the page's
    # size times its depth.
    if tag.name in HEADINGS or not (
        marked
        or tag.name == "header"
        or (tag.name == "aside" and tag.find_parent("article") is None)
    ):
        return False
    if tag.find_parent(["pre", "code"]) or len(tag.get_text().split()) >= (
        _FURNITURE_SHARE * words
    ):
        return False
    headings = tag.find_all(HEADINGS)
    if not headings:
        return True
    # An <h1> names the page (an article's header with its author's link holds one).
    if not marked or any(heading.name == "h1" for heading in headings):
        return False
    rest = len(tag.get_text().split()) - len(headings[0].get_text().split())
    if any(word.startswith("comment") for word in classes):
        return True
    if rest <= _WIDGET_WORDS and tag.find(_TEXT_BLOCKS) is None:
        return True
    linked = sum(
        len(link.get_text().split())
        for link in tag.find_all("a")
        if headings[0] not in link.parents
    )
    return rest > 0 and linked >= _LINK_SHARE * rest


def read_page(text: str) -> Page:
    """An HTML page's `<title>`, `<link rel="canonical">`, `<meta name="category">` and
    article text as Markdown.

    The text is the page's `<main>` (or `role="main"`), else its one `<article>` (not
    counting those inside it, such as WordPress's comments), else its body, without page
    furniture (`_FURNITURE`, `_MEDIA`, `_ROLES`, `_furniture`) or headings' own anchor links
    ("¶"). The title is the `<title>`, or the first `<h1>` where the `<title>` is
    that heading, a separator and the site's name ("Refunds – Acme Help Centre"). Relative
    links resolve against the canonical URL. Raises
    RecursionError for tags nested past Python's limit, ValueError for a number markdownify
    cannot read (`<ol start="²">`)."""
    # lxml closes what HTML lets a writer leave open ("<li>One<li>Two", "<p>A<p>B") as a
    # browser does; html.parser nests each in the last, out of order and past Python's
    # recursion limit. Browsers read a stray "</br>" as "<br>"; parsers drop it.
    soup = BeautifulSoup(re.sub(r"</br\s*>", "<br>", text, flags=re.IGNORECASE), "lxml")
    title = " ".join(soup.title.get_text().split()) if soup.title else ""
    canonical = soup.find("link", rel="canonical")
    url = str(canonical.get("href") or "") if canonical else ""
    category = soup.find("meta", attrs={"name": "category"})
    # WordPress marks each comment up as an <article> inside the post's own.
    articles = [tag for tag in soup.find_all("article") if tag.find_parent("article") is None]
    root = (
        soup.find("main")
        or soup.find(attrs={"role": "main"})
        or (articles[0] if len(articles) == 1 else None)
        or soup.body
        or soup
    )
    for tag in root.find_all(_FURNITURE + _MEDIA) + root.find_all(attrs={"role": _ROLES}):
        if not tag.decomposed and not _labels_content(tag):
            tag.decompose()
    words = len(root.get_text().split())
    for tag in root.find_all(True):
        if not tag.decomposed and _furniture(tag, words):
            tag.decompose()
    # MkDocs' "¶" and Docusaurus' zero-width link after each heading, pointing at itself.
    for heading in root.find_all(HEADINGS):
        for link in heading.find_all("a", href=True):
            if str(link["href"]).startswith("#") and not link.get_text().strip("¶#§ \u200b"):
                link.decompose()
    heading = root.find("h1")
    named = " ".join(heading.get_text().split()) if heading else ""
    if named and re.match(rf"{re.escape(named)}\s*[-–—|:·•]\s*\S", title):
        title = named
    if url:
        for attribute in ("href", "src"):
            for tag in root.find_all(attrs={attribute: True}):
                tag[attribute] = urljoin(url, str(tag[attribute]))
    converter = _Markdown(
        heading_style="ATX",
        bullets="-",
        escape_asterisks=False,
        escape_underscores=False,
        table_infer_header=True,
    )
    markdown = converter.convert_soup(root)
    return Page(title, url, str(category.get("content") or "") if category else "", markdown)

"""Issue 11: any knowledge base (FAQ files, article folders), hybrid retrieval, KB-independent
handoff, language, follow-ups, and the measured targets on ../shared/data."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import requests

import assistant.articles as article_parser
from assistant import knowledge
from assistant.answers import Turn
from assistant.config import PROJECT_ROOT
from assistant.decisions import SECOND_QUESTION_SURE, STATEMENT_SURE
from assistant.evaluation import read_queries, retrieval_metrics, scope_metrics
from assistant.knowledge import Document
from assistant.llm import ExtractiveProvider
from assistant.rag import Assistant, build_retriever, build_signals
from assistant.replies import kb_topics
from assistant.retrieval import (
    EmbeddingCache,
    Hit,
    RetrievalSettings,
    Retriever,
    SearchResult,
    make_encoder,
    wordllama_encoder,
)
from assistant.signals import HandoffSignals, emphatic, read_examples
from tests.conftest import SHARED_DATA, running_api

STACKFAQ = SHARED_DATA / "stackfaq"
NO_SHARED = "../shared/data is absent on this machine"
OUT_OF_SCOPE = SHARED_DATA / "out-of-scope-dev.csv"

ARTICLES = {
    "billing/refunds.md": """---
title: Billing and refunds
url: https://help.example/billing/refunds
---
# Refunds

Ask for a refund within 14 days of a charge from Account > Billing History.

## Charged twice?

A duplicate charge is refunded in full within 5 business days once you report it.
""",
    "devices.html": """<html><head><title>Devices</title>
<link rel="canonical" href="https://help.example/devices"></head><body>
<h1>Watch on a game console</h1><p>Install the app from the PlayStation or Xbox store
and sign in with a code.</p>
<h2>Smart TVs</h2><p>Samsung, LG and Android TVs from 2018 on are supported.</p>
</body></html>""",
}


@pytest.fixture(scope="module")
def articles(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("help-centre")
    for name, text in ARTICLES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def make_assistant(settings, source: str) -> Assistant:
    retriever = build_retriever(settings, knowledge.load_configured(settings, source).documents)
    return Assistant(
        retriever,
        ExtractiveProvider(),
        knowledge.load_profile(settings.profile_path),
        signals=build_signals(settings, retriever),
    )


@pytest.fixture(scope="module")
def demo(settings) -> Assistant:
    return make_assistant(settings, "demo")


def _responses(folder: Path, name: str, text: str) -> dict[str, str]:
    """The entries' answers by id, of `folder` with the page `name` written in it."""
    (folder / name).write_text(text, encoding="utf-8")
    return {doc.id: doc.response for doc in knowledge.read_file(folder)}


def test_article_folder_sections_get_path_and_slug_ids(articles):
    report = knowledge.LoadReport()
    docs = {doc.id: doc for doc in knowledge.read_file(articles, report)}
    assert set(docs) == {
        "billing/refunds.md#refunds",
        "billing/refunds.md#charged-twice",
        "devices.html#watch-on-a-game-console",
        "devices.html#smart-tvs",
    }
    twice = docs["billing/refunds.md#charged-twice"]
    assert twice.question == "Charged twice?"
    assert twice.url == "https://help.example/billing/refunds#charged-twice"
    assert twice.category == "Billing and refunds"
    assert docs["devices.html#smart-tvs"].url == "https://help.example/devices#smart-tvs"


def test_markdown_front_matter_gives_sections_alternate_questions(tmp_path, caplog):
    """A help centre's missed wordings go in the article's front matter, under the section's
    anchor (a newcomer found no way to add them to a folder KB); one naming no section is
    reported, not dropped silently."""
    (tmp_path / "billing.md").write_text(
        "---\ntitle: Billing\nalternates:\n"
        '  payment-methods: ["do you take paypal?", "Payment methods"]\n'
        '  "#refunds": "money back? | can I get a refund"\n'
        "  pricing: how much is it\n---\n"
        "## Payment methods\nWe accept cards.\n\n## Refunds\nWithin 14 days.\n",
        encoding="utf-8",
    )
    with caplog.at_level("WARNING", logger="assistant.articles"):
        docs = {doc.id: doc for doc in knowledge.read_file(tmp_path)}
    assert docs["billing.md#payment-methods"].alternates == ("do you take paypal?",)
    assert docs["billing.md#refunds"].alternates == ("money back?", "can I get a refund")
    assert "pricing" in caplog.text and "payment-methods" not in caplog.text


def test_article_answers_keep_the_articles_markdown(tmp_path):
    """A writer's line wraps are not the answer's: a newcomer's extractive answer read
    "Cancel⏎Plus". Lists, tables, hard breaks, rules and HTML keep their lines, blank lines
    part blocks (else a renderer reads the paragraph after a table as a row of it), and code
    keeps its spacing and indented code its indentation. HTML comes out as the same Markdown:
    items, table rows, fenced <pre>."""
    (tmp_path / "plans.md").write_text(
        "## Cancelling\nCancel\nPlus from Settings.\nIt ends at the period's close.\n\n"
        "Steps:\n- Open Settings\n- Tap Cancel\n  when asked.\n\n\n"
        "The plan\ncosts $5  \nper month.\n\n"
        "Plan | Price\n--- | ---\nBasic | $5\n\n---\nSecond part.\n\n"
        "    plus cancel\n    --now\n\n"
        "```\n~~~\nE101  Network lost   - retry\n\n--now\n```\n\n"
        "<details>\n<summary>More</summary>\nHidden text.\n</details>\n",
        encoding="utf-8",
    )
    docs = _responses(
        tmp_path,
        "devices.html",
        "<h2>Consoles</h2><p>Xbox and\n  PlayStation apps<br>are free.</p><ul><li>Xbox</li>"
        "<li>PS5</li></ul><ol><li>Open</li><li>Sign in</li></ol><table><tr><th>Plan</th>"
        "<th>Price</th></tr><tr><td>Basic</td><td>$5</td></tr></table>"
        "<pre>\nE101  Network lost\n--now</pre>a</br>b<p>After.</p>",
    )
    assert docs["plans.md#cancelling"] == "\n".join(
        [
            "Cancel Plus from Settings. It ends at the period's close.",
            "",
            "Steps:",
            "- Open Settings",
            "- Tap Cancel when asked.",
            "",
            "The plan costs $5  ",
            "per month.",
            "",
            "Plan | Price",
            "--- | ---",
            "Basic | $5",
            "",
            "---",
            "Second part.",
            "",
            "    plus cancel",
            "    --now",
            "",
            "```",
            "~~~",
            "E101  Network lost   - retry",
            "",
            "--now",
            "```",
            "",
            "<details>",
            "<summary>More</summary>",
            "Hidden text.",
            "</details>",
        ]
    )
    assert docs["devices.html#consoles"] == "\n".join(
        [
            "Xbox and PlayStation apps  ",
            "are free.",
            "",
            "- Xbox",
            "- PS5",
            "",
            "1. Open",
            "2. Sign in",
            "",
            "| Plan | Price |",
            "| --- | --- |",
            "| Basic | $5 |",
            "",
            "```",
            "E101  Network lost",
            "--now",
            "```",
            "",
            "a  ",
            "b",
            "",
            "After.",
        ]
    )


def test_reference_links_are_written_inline_in_each_section(tmp_path):
    """A writer's reference links ("[fees][1]" with "[1]: https://…" at the article's end)
    reached customers as "[fees][1]", and the definitions as the last section's text. Each
    section's links now read inline; code, escaped brackets and unknown labels stay as
    written."""
    docs = _responses(
        tmp_path,
        "billing.md",
        "# Billing\n\n## Fees\n\nSee [fees][1], the [Help] page or [Refunds][]; "
        "`[1]`, \\[1] and [later][9] stay.\n\n"
        "## Refunds\n\nWithin [14 days][days].\n\n```\n[1]\n```\n\n"
        '[1]: https://help.example/fees "Fees"\n[help]: /help\n'
        "[refunds]: <https://help.example/a refund>\n[days]: /refunds\n",
    )
    assert docs == {
        "billing.md#fees": "See [fees](https://help.example/fees), the [Help](/help) page or "
        "[Refunds](https://help.example/a%20refund); `[1]`, \\[1] and [later][9] stay.",
        "billing.md#refunds": "Within [14 days](/refunds).\n\n```\n[1]\n```",
    }
    # A reviewer's and a newcomer's cases: link text wrapped over two lines, holding
    # brackets or an image's link, a URL holding brackets, and a label defined twice.
    (tmp_path / "billing.md").write_text(
        "## Plans\n\n[Compare\nthe plans][1], [the [new] fees][1], [![build][img]][ci],\n"
        "<https://help.example/[1]> and [the app](https://help.example/[1]). [1]: soon\n\n"
        "[1]: /plans\n[img]: /badge.png\n[ci]: /ci\n[1]: /twice\n",
        encoding="utf-8",
    )
    assert [doc.response for doc in knowledge.read_file(tmp_path)] == [
        "[Compare the plans](/plans), [the [new] fees](/plans), [![build](/badge.png)](/ci), "
        "<https://help.example/[1]> and [the app](https://help.example/[1]). [1](/plans): soon"
    ]


def test_help_centre_markup_as_cms_pages_and_writers_use_it(tmp_path):
    """A reviewer's cases: CMS pages wrap list items in <p> (the items came out empty),
    number lists from `start`, nest lists, leave a table's corner cell empty, put `|` in a
    cell and ``` in <pre> (which closed the fence early); the page's Markdown keeps a rule at
    its top, which is not front matter. In Markdown, nested items keep their indentation, a
    quote's wrapped lines lose their repeated ">", and a heading's link is not its name."""
    (tmp_path / "cms.html").write_text(
        "<hr><p>Intro.</p><hr><h2>Steps</h2><ol start=3><li><p>Open settings.</p></li>"
        "<li><p>Tap <b>Cancel</b>.</p><ul><li>Confirm</li></ul></li></ol>"
        "<table><tr><th></th><th>Basic</th></tr><tr><td>Price</td><td>$5 | month</td></tr>"
        "</table><pre>run\n```\ndone\n</pre>",
        encoding="utf-8",
    )
    docs = _responses(
        tmp_path,
        "guide.md",
        "## [Quotes](https://help.example/q)\n> Keep this\n> in mind.\n\n"
        "- Open\n  - Playback\n    settings\n",
    )
    assert docs["cms.html"] == "---\n\nIntro.\n\n---"
    assert docs["cms.html#steps"] == "\n".join(
        [
            "3. Open settings.",
            "4. Tap **Cancel**.",
            "",
            "   - Confirm",
            "",
            "| | Basic |",
            "| --- | --- |",
            "| Price | $5 \\| month |",
            "",
            "````",
            "run",
            "```",
            "done",
            "````",
        ]
    )
    assert docs["guide.md#quotes"] == "> Keep this in mind.\n\n- Open\n  - Playback settings"


def test_html_reads_as_a_browser_reads_it_and_writers_notes_stay_private(tmp_path):
    """A reviewer's cases: end tags HTML lets a writer omit ran list items and table cells
    together; a paragraph opening "# of" became a heading and was lost; "<Premium>" fell out
    of a heading's name and id; screenshots came out as Markdown images. In Markdown, a
    byte-order mark hid the front matter, a file opening with a rule lost its first
    paragraph, an HTML comment (a note to the team) reached customers, and a list in a
    quote lost its nesting. A file that cannot be read is a one-line error naming it."""
    (tmp_path / "steps.html").write_text(
        "<h2>Steps</h2><ol><li>Open Settings<li>Tap Cancel</ol>"
        "<p># of screens depends on your plan. <img src=a.png alt=shot.png></p>"
        "<table><tr><td>Plan<td>Refund<tr><td>Monthly<td>No</table>"
        "<h2>What is &lt;Premium&gt;?</h2><p>Our top plan.</p>",
        encoding="utf-8",
    )
    (tmp_path / "notes.md").write_text(
        "\ufeff---\ntitle: Notes\n---\n## Quote\n> 1. Open\n>    - Playback\n\n"
        "<!-- check this with legal -->\n\nDone <!-- in 5 days? -->.\n",
        encoding="utf-8",
    )
    (tmp_path / "ruled.md").write_text("---\n\nIntro.\n\n---\n", encoding="utf-8")
    docs = {doc.id: doc for doc in knowledge.read_file(tmp_path)}
    assert docs["steps.html#steps"].response == "\n".join(
        [
            "1. Open Settings",
            "2. Tap Cancel",
            "",
            "\\# of screens depends on your plan.",
            "",
            "| Plan | Refund |",
            "| --- | --- |",
            "| Monthly | No |",
        ]
    )
    assert docs["steps.html#what-is-premium"].question == "What is <Premium>?"
    assert docs["notes.md#quote"].response == "> 1. Open\n>    - Playback\n\nDone."
    assert docs["notes.md#quote"].category == "Notes"
    assert docs["ruled.md"].response == "---\n\nIntro.\n\n---"
    (tmp_path / "broken.md").write_text("---\ntitle: Billing: refunds\n---\nx\n", "utf-8")
    with pytest.raises(knowledge.KnowledgeBaseError, match="broken.md: front matter is not"):
        knowledge.read_file(tmp_path)
    (tmp_path / "broken.md").unlink()
    (tmp_path / "deep.html").write_text("<font>Line<br>\n" * 2000, encoding="utf-8")
    with pytest.raises(knowledge.KnowledgeBaseError, match="deep.html: cannot be read"):
        knowledge.read_file(tmp_path)


CMS_PAGE = """<!doctype html><html><head><title>Payments &ndash; Acme Help Centre</title>
<link rel="canonical" href="https://help.acme.example/hc/articles/42-payments"></head><body>
<header class="header"><a href="/hc"><img src="/logo.svg" alt="Acme"></a>
<nav><a href="/hc">Help Centre</a></nav></header>
<ol class="breadcrumbs"><li><a href="/hc">Acme Help Centre</a></li><li>Billing</li></ol>
<main><div class="layout has-sidebar"><article><header class="article-header"><h1>Payments</h1>
<div class="article-meta">Updated 3 months ago</div></header>
<h2>Which cards do you take?</h2><p>Visa and PayPal. See <a href="/hc/articles/7">fees</a>.</p>
<div class="article-votes">Was this article helpful? <button>Yes</button><button>No</button>
</div><footer>12 out of 15 found this helpful</footer></article></div></main>
<aside class="sidebar"><h3>Related articles</h3><ul><li>Refunds</li></ul></aside>
<footer><p>&copy; Acme</p></footer></body></html>"""


def test_a_cms_page_gives_its_article_not_its_furniture(tmp_path, caplog):
    """A newcomer's Zendesk-style export answered "Your billing is a joke" with "Updated 3
    months ago" (the article's meta line, an entry of its own), had a breadcrumb and a
    "Related articles" sidebar as entries, every page's last answer ending in its vote
    widget, the site's name in every category, and links relative to a site the customer
    is not on. A class naming furniture on what holds the article ("has-sidebar") does not
    make it furniture. An `alternates.yaml` gives HTML sections the alternate questions front
    matter gives Markdown ones."""
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "payments.html").write_text(CMS_PAGE, encoding="utf-8")
    (tmp_path / "alternates.yaml").write_text(
        '"billing/payments.html#which-cards-do-you-take": ["do u take paypal", "amex?"]\n'
        "billing/payments.html#refunds: money back\n",
        encoding="utf-8",
    )
    with caplog.at_level("WARNING", logger="assistant.articles"):
        docs = knowledge.read_file(tmp_path)
    assert "billing/payments.html#refunds, which name no entry" in caplog.text
    assert [(doc.id, doc.category) for doc in docs] == [
        ("billing/payments.html#which-cards-do-you-take", "Payments")
    ]
    assert docs[0].response == (
        "Visa and PayPal. See [fees](https://help.acme.example/hc/articles/7)."
    )
    assert (
        docs[0].url == "https://help.acme.example/hc/articles/42-payments#which-cards-do-you-take"
    )
    assert docs[0].alternates == ("do u take paypal", "amex?")
    (tmp_path / "alternates.yaml").write_text("- not a mapping\n", encoding="utf-8")
    with pytest.raises(knowledge.KnowledgeBaseError, match="alternates.yaml: expected a mapping"):
        knowledge.read_file(tmp_path)


def test_a_static_site_page_keeps_every_section_and_no_self_links(tmp_path):
    """A reviewer's cases. Class and id words marked sections as furniture: MkDocs and
    Docusaurus give each heading its slug as an id ("share-a-playlist", "meta-quest"), and a
    "layout-with-sidebar__content" wrapper held the article. A collapsible FAQ's answers are
    hidden until opened, an <aside> inside the article is its callout, a "#" after a <br>
    opened a heading, a heading's own "¶" link reached its name, and a short <h1> that only
    begins the <title> is no title."""
    (tmp_path / "docs.html").write_text(
        "<html><head><title>Playlists and more</title></head><body><main>"
        '<div class="layout-with-sidebar"><div class="layout-with-sidebar__content">'
        '<h1>Playlists<a class="headerlink" href="#playlists">¶</a></h1>'
        '<h2 id="share-a-playlist">Share a playlist</h2><p>Tap Share.</p>'
        '<h2 id="meta-quest">Meta Quest</h2><p>Works in the browser.<br># of headsets: 2</p>'
        "<article><h2>Can I pause?</h2><div hidden>Yes, for three months.</div>"
        '<aside class="note">Pausing keeps your downloads.</aside></article>'
        '</div><div class="layout-with-sidebar__side">'
        "<ul><li>Popular</li></ul></div></div></main></body></html>",
        encoding="utf-8",
    )
    docs = {doc.id: doc for doc in knowledge.read_file(tmp_path)}
    assert list(docs) == [
        "docs.html#share-a-playlist",
        "docs.html#meta-quest",
        "docs.html#can-i-pause",
    ]
    assert docs["docs.html#meta-quest"].response == "Works in the browser.  \n\\# of headsets: 2"
    assert docs["docs.html#can-i-pause"].response == (
        "Yes, for three months.\n\nPausing keeps your downloads."
    )
    assert docs["docs.html#share-a-playlist"].category == "Playlists and more"


ZENDESK_PAGE = """<html><head><title>Cancel your plan</title></head><body><main>
<div class="article-container"><aside class="article-sidebar">
<section class="section-articles collapsible-sidebar"><h3>Articles in this section</h3><ul>
<li><a href="/hc/1">Pause your plan</a></li><li><a href="/hc/2">Change your plan</a></li></ul>
</section></aside><article class="article">
<header class="article-header"><h1>Cancel your plan</h1>
<div class="article-meta"><a href="/hc/profiles/9">Dana Lee</a> Updated</div></header>
<h2>How do I cancel?</h2><p>Open Account, then Plan, and choose Cancel plan.</p>
<section class="related-articles"><h2>Related articles</h2><ul>
<li><a href="/hc/3">Refund rules</a></li><li><a href="/hc/4">Pausing instead of cancelling</a></li>
</ul></section></article></div>
<section class="recent-articles"><h2>Recently viewed articles</h2><ul>
<li><a href="/hc/5">Payment methods we accept today</a></li></ul></section>
<div class="related-note"><h2>When does cancelling take effect?</h2><p>At the end of the
billing period you paid for; see <a href="/hc/3">refunds</a>.</p></div></main></body></html>"""


def test_navigation_under_its_own_heading_is_furniture(tmp_path):
    """Zendesk's "Articles in this section" sidebar, "Related articles" and "Recently viewed
    articles" each hold a heading over a list of links, and each became an entry whose answer
    was links. A marked block whose own words are mostly its text (not links) stays an
    answer, and the article header holding the page's <h1> stays."""
    (tmp_path / "cancel.html").write_text(ZENDESK_PAGE, encoding="utf-8")
    docs = {doc.id: doc for doc in knowledge.read_file(tmp_path)}
    assert list(docs) == [
        "cancel.html#how-do-i-cancel",
        "cancel.html#when-does-cancelling-take-effect",
    ]
    assert docs["cancel.html#how-do-i-cancel"].category == "Cancel your plan"
    assert docs["cancel.html#how-do-i-cancel"].response == (
        "Open Account, then Plan, and choose Cancel plan."
    )


WORDPRESS_PAGE = """<html><head><title>Change your plan</title></head><body>
<main id="content"><article class="post"><header class="entry-header"><h1>Change your plan</h1>
<a class="article-subscribe" role="button" href="/hc/subscribe">Follow</a></header>
<h2>How do I upgrade?</h2><p>Open <strong>Account</strong> > <strong>Membership</strong> and
choose a plan - the new price starts at once.</p>
<pre><code>plan <span class="hljs-comment"># premium</span></code></pre>
<section><header><h2>Refunds</h2><a href="/hc/refunds">Read the policy</a></header>
<p>Unused days are refunded.</p></section>
<div id="jp-relatedposts" class="jp-relatedposts"><h3 class="jp-relatedposts-headline">
<em>Related articles</em></h3><div class="jp-relatedposts-post">
<h4><a href="/hc/9">Pause your plan for up to three months</a></h4><p>In "Plans"</p></div>
<div class="jp-relatedposts-post"><h4><a href="/hc/8">Cancel your plan</a></h4></div></div>
<section class="comment-section"><h2>Comments</h2><p>0 comments</p>
<p>Please <a href="/login">sign in</a> to leave a comment.</p></section></article>
<aside><h2>Downloads</h2><p>Get the <a href="/apps">apps</a> for your TV.</p></aside>
<div class="recently-viewed widget"><h3>Recently viewed</h3><ul>
<li><a href="/hc/5">Payment methods</a></li><li><a href="/hc/6">Gift cards</a></li></ul>
</div></main></body></html>"""


def test_a_theme_s_buttons_comments_and_related_posts_are_furniture(tmp_path):
    """A newcomer's help centre: Zendesk's "Follow" link (a button by its role) became the
    whole of an entry, and so did its "Comments" section, Jetpack's related posts (a heading
    per link) and a "recently-viewed" widget. A heading's own header with a link, an aside
    with a heading, and a highlighter's "hljs-comment" in code stay; text between inline
    elements is not escaped as if it began a line ("Account \\> Membership")."""
    (tmp_path / "plan.html").write_text(WORDPRESS_PAGE, encoding="utf-8")
    docs = {doc.id: doc for doc in knowledge.read_file(tmp_path)}
    assert list(docs) == ["plan.html#how-do-i-upgrade", "plan.html#refunds", "plan.html#downloads"]
    assert docs["plan.html#how-do-i-upgrade"].response == (
        "Open **Account** > **Membership** and choose a plan - the new price starts at once."
        "\n\n```\nplan # premium\n```"
    )
    assert docs["plan.html#refunds"].response == (
        "[Read the policy](/hc/refunds)\n\nUnused days are refunded."
    )


def test_a_reviewer_s_pages_keep_their_questions_and_escapes(tmp_path):
    """A reviewer's cases after furniture by role and mid-line escapes: text after an empty
    anchor, a comment or a line break inside an inline element still begins a line (it
    became a heading); accordion questions in a `role="button"` link or a `<button>` in a
    heading stay; related links side by side, not in a list, are navigation; a fence, a
    thematic break and a definition written as text stay text."""
    docs = _responses(
        tmp_path,
        "faq.html",
        '<main><h1>Billing FAQ</h1><h2>Screens</h2><p><a name="screens"></a># of screens '
        "depends on your plan.</p><p><span>Plans:<br></span># of screens: 4</p>"
        '<h2><a role="button" href="#c1">How do I cancel my plan?</a></h2>'
        "<div>Open Account, choose Cancel plan.</div>"
        '<h2 class="accordion-header"><button>Can I pause?</button></h2><p>~~~ Yes ~~~</p>'
        "<p>[1]: https://help.example</p><p>***</p>"
        '<section class="related"><h2>See also</h2><p><a href="/c">Gift cards</a> and '
        '<a href="/d">Payment methods</a></p></section></main>',
    )
    assert docs == {
        "faq.html#screens": "\\# of screens depends on your plan.\n\nPlans:  \n\\# of screens: 4",
        "faq.html#how-do-i-cancel-my-plan": "Open Account, choose Cancel plan.",
        "faq.html#can-i-pause": "\\~~~ Yes ~~~\n\n\\[1]: https://help.example\n\n\\***",
    }


def test_a_wordpress_post_with_comments_likes_and_contents_gives_its_sections(tmp_path):
    """A second newcomer's WordPress pages: comments marked up as <article>s inside the
    post's made the whole <body> the article, and its sidebar ("Still need help?") an entry;
    Jetpack's "Like this:" widget, a table of contents and a feedback box with a paragraph
    became entries or answers' tails."""
    docs = _responses(
        tmp_path,
        "refunds.html",
        "<html><head><title>Refunds</title></head><body><div id='page'>"
        "<article class='post'><h1>Refunds</h1>"
        "<div class='wp-block-uagb-table-of-contents'><div>Table Of Contents</div><ul>"
        "<li><a href='#can-i-get-a-refund'>Can I get a refund?</a></li>"
        "<li><a href='#charged-twice'>Charged twice</a></li></ul></div>"
        "<h2>Can I get a refund?</h2><p>Within 14 days of a payment.</p>"
        "<h2>Charged twice</h2><p>The second charge is a hold and drops off in 3 days.</p>"
        "<div class='kb-article-feedback'><p>Was this page helpful?</p>"
        "<a role='button' href='#'>Yes</a><span>47</span></div>"
        "<div class='sharedaddy sd-block sd-like'><h3 class='sd-title'>Like this:</h3>"
        "<span>Like</span> <span class='loading'>Loading...</span></div>"
        "<section id='comments'><h2>2 thoughts on Refunds</h2>"
        "<article class='comment-body'><p>Great, thanks!</p></article>"
        "<article class='comment-body'><p>Worked for me.</p></article></section></article>"
        "<aside class='widget-area'><h3>Still need help?</h3><p>Our team is available "
        "8am to 10pm.</p></aside></div></body></html>",
    )
    assert docs == {
        "refunds.html#can-i-get-a-refund": "Within 14 days of a payment.",
        "refunds.html#charged-twice": "The second charge is a hold and drops off in 3 days.",
    }


def test_short_answers_in_marked_elements_stay(tmp_path):
    """A reviewer's cases for the widget rule ("Like this:" over "Like Loading..."): a
    rating card and a FAQ item are a heading over a short paragraph, and stay."""
    docs = _responses(
        tmp_path,
        "ratings.html",
        "<main><h1>Parental controls</h1><h2>Maturity ratings</h2><p>Each title has one.</p>"
        "<div class='rating-card'><h3>TV-MA</h3><p>Mature audiences only.</p></div>"
        "<div class='faq-contents'><h3>Can I pause?</h3><p>Yes, twice yearly.</p></div>"
        "<div class='sharedaddy sd-like'><h3>Like this:</h3><span>Like</span></div></main>",
    )
    assert docs == {
        # "Can I pause?" is a question of its own: no subsection joins the answer.
        "ratings.html#maturity-ratings": "Each title has one.",
        "ratings.html#tv-ma": "Mature audiences only.",
        "ratings.html#can-i-pause": "Yes, twice yearly.",
    }


def test_a_section_answers_with_its_subsections(tmp_path):
    """A second newcomer's "How do I cancel?" answered with its one opening line; its steps,
    under "On the web" and "On iPhone", were entries of their own that never named the
    question. A section now holds its subsections' text (they stay entries too), unless it
    is the article's title, they are questions of their own, or they make a chapter."""
    chapter = "\n\n".join(f"### Topic {n}\n\n{'word ' * 60}" for n in range(5))
    docs = _responses(
        tmp_path,
        "cancel.md",
        "# Cancelling\n\nWhat to know.\n\n## How do I cancel?\n\nIt depends on who bills "
        "you.\n\n### On the web\n\n1. Open Account.\n2. Choose Cancel.\n\n#### With a gift "
        "card\n\nIt runs out first.\n\n### On iPhone\n\nOpen Settings.\n\n### Still stuck?\n\n"
        "## Billing\n\nAll about billing.\n\n### Why was I charged twice?\n\nA hold.\n\n"
        f"## Everything else\n\nMore.\n\n{chapter}\n",
    )
    assert docs["cancel.md#cancelling"] == "What to know."
    assert docs["cancel.md#how-do-i-cancel"] == (
        "It depends on who bills you.\n\n**On the web**\n\n1. Open Account.\n2. Choose "
        "Cancel.\n\n**With a gift card**\n\nIt runs out first.\n\n**On iPhone**\n\n"
        "Open Settings."
    )
    assert docs["cancel.md#on-the-web"] == (
        "1. Open Account.\n2. Choose Cancel.\n\n**With a gift card**\n\nIt runs out first."
    )
    assert docs["cancel.md#on-iphone"] == "Open Settings."
    assert docs["cancel.md#everything-else"] == "More."
    # A reviewer's cases: questions under a topic are entries of their own, not its answer;
    # an empty last subsection adds no dangling heading.
    assert docs["cancel.md#billing"] == "All about billing."


def test_a_folder_is_parsed_again_only_where_a_file_changed(tmp_path, monkeypatch, caplog):
    """A help centre of 1.2 MB of HTML was parsed at every start (about 5.6 s); the service's
    cache folder now keeps each file's parse under its text, so only an edited file is
    parsed again, and an unusable cache folder only costs the time."""
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "cancel.html").write_text(ZENDESK_PAGE, encoding="utf-8")
    (kb / "pause.md").write_text("# Pausing\n\n## Can I pause?\n\nYes.\n", encoding="utf-8")
    cache = tmp_path / "cache"

    def load() -> list[Document]:
        demo = PROJECT_ROOT / "data" / "demo-kb.csv"
        return knowledge.load(str(kb), demo=demo, cache_dir=cache, url="").documents

    first = load()
    parsed: list[str] = []
    for name in ("parse_html", "parse_markdown"):
        real = getattr(article_parser, name)
        monkeypatch.setattr(
            article_parser,
            name,
            lambda *args, real=real, name=name: parsed.append(name) or real(*args),
        )
    assert load() == first
    assert parsed == []
    (kb / "pause.md").write_text("# Pausing\n\n## Can I pause?\n\nFor 3 months.\n")
    assert load()[-1].response == "For 3 months."
    assert parsed == ["parse_markdown"]
    unusable = tmp_path / "file"
    unusable.write_text("")
    assert knowledge.read_file(kb, cache_dir=unusable / "cache")[-1].response == "For 3 months."
    # A cache that fails once made (here a file where the folder of the parser's module
    # goes) too.
    (stored,) = [path.parents[1] for path in cache.glob("articles/**/_parse")]
    shutil.rmtree(stored)
    stored.write_text("")
    (kb / "pause.md").write_text("# Pausing\n\n## Can I pause?\n\nFor 2 months.\n")
    caplog.clear()
    with caplog.at_level("WARNING", logger="assistant.articles"):
        assert load()[-1].response == "For 2 months."
    assert caplog.text.count("could not keep parsed articles") == 1


def test_a_file_in_another_encoding_is_a_one_line_error(tmp_path):
    path = tmp_path / "kb.csv"
    path.write_bytes("question,answer\nCómo pago?,Con tarjeta.\n".encode("latin-1"))
    with pytest.raises(knowledge.KnowledgeBaseError, match="not UTF-8"):
        knowledge.read_file(path)


def _write_csv(path: Path, rows: list) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_faq_columns_and_empty_rows(tmp_path):
    path = _write_csv(
        tmp_path / "faq.csv",
        [
            ["id", "question", "answer", "url"],
            ["pay", "How do I pay?", "By card.", "https://x.example/pay"],
            ["pay", "How do I pay?", "By card.", "https://x.example/pay"],
            ["empty", "Where?", "", ""],
        ],
    )
    report = knowledge.LoadReport()
    docs = knowledge.read_file(path, report)
    assert [(d.id, d.url, d.intent) for d in docs] == [("pay", "https://x.example/pay", "")]
    assert (report.duplicates, report.empty) == (1, 1)


def test_alternate_questions_from_csv_and_json(tmp_path):
    csv_path = _write_csv(
        tmp_path / "faq.csv",
        [
            ["id", "Question", "answer", "Alternates"],
            ["pay", "How do I pay?", "By card.", "card? | How do I pay?\n| | Card?"],
            ["tv", "Which TVs?", "Most smart TVs.", ""],
        ],
    )
    json_path = tmp_path / "faq.json"
    json_path.write_text(
        '[{"question": "How do I pay?", "answer": "By card.", "alternates": ["card?", " "]}]'
    )
    docs = knowledge.read_file(csv_path)
    assert [d.alternates for d in docs] == [("card?",), ()]
    assert docs[0].phrasings == ("How do I pay?", "card?")
    assert knowledge.read_file(json_path)[0].alternates == ("card?",)


def test_an_alternate_question_finds_its_entry(settings, tmp_path):
    """Customers' wording that only an alternate carries ranks that entry first; without
    the alternate the same KB ranks another entry first."""
    encoder = make_encoder(settings)
    faq = [
        ("login", "How do I sign in to my account?", "Use your email and password.", ""),
        ("tv", "Which devices can I watch on?", "Phones, tablets, smart TVs and consoles.", ""),
        ("streams", "How many screens can I use at once?", "Basic one, Premium four at once.",
         "it says too many people are using my account | a screen limit error"),
    ]  # fmt: skip
    question = "message says too many people using my account"
    ranked = {}
    for name, rows in (("with", faq), ("without", [(*row[:3], "") for row in faq])):
        header = ("id", "question", "answer", "alternates")
        docs = knowledge.read_file(_write_csv(tmp_path / f"{name}.csv", [header, *rows]))
        retriever = Retriever(docs, RetrievalSettings(), (), encoder)
        ranked[name] = [int(i) for i in (-retriever.hybrid_scores(question)).argsort()]
    assert ranked["with"][0] == 2
    assert ranked["without"][0] == 0


def test_api_sources_carry_section_ids(embedded_server, articles, tmp_path):
    """Served with `serve --kb`, over KB_PATH (the demo, from `running_api`): a newcomer
    looked for the flag `ask` and `eval` have."""
    with running_api(embedded_server.get_uri(), tmp_path, "--kb", str(articles)) as served:
        response = requests.post(
            f"{served.url}/question", json={"question": "I was charged twice"}, timeout=30
        )
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "answered"
    assert body["sources"][0]["id"] == "billing/refunds.md#charged-twice"
    assert body["sources"][0]["url"] == "https://help.example/billing/refunds#charged-twice"


def test_embeddings_are_cached_by_content(settings, tmp_path):
    encoder = make_encoder(settings)
    calls = []

    class Counting:
        name, batch_size, multilingual = encoder.name, 8, False

        def embed(self, texts):
            calls.append(len(texts))
            return encoder.embed(texts)

    first = EmbeddingCache(Counting(), tmp_path).embed_multi(["a b", "c d", "a b"])
    assert calls == [2] and first.shape == (3, 256)
    again = EmbeddingCache(Counting(), tmp_path)
    assert (again.embed_multi(["c d", "e f"])[0] == first[1]).all()
    assert calls == [2, 1], "only the new text is embedded after a restart"


@pytest.mark.parametrize(
    "question, reason",
    [
        ("can I talk to a real person please", "requested_human"),
        # Asked as how to reach one (a newcomer's "how do I reach a human" was declined).
        ("how do I get hold of a real person", "requested_human"),
        ("where can I find a human to help me", "requested_human"),
        # Its question mark once outweighed it: nearly every KB question ends in one.
        ("how do I reach a real person?", "requested_human"),
        ("that didn't help at all", "frustration"),
        ("wie kann ich mein Abo kündigen?", "language"),
        ("我想取消订阅", "language"),
    ],
)
def test_handoff_on_a_kb_without_a_human_intent(demo, question, reason):
    """A message in another language is told so in its own language first (a newcomer's
    German customers read only English), then in the KB's, with how to reach a person."""
    answer = demo.answer(question)
    assert (answer.status, answer.handoff_reason) == ("handoff", reason)
    if reason == "language":
        own = {"wie kann ich mein Abo kündigen?": "Entschuldigung, ich kann bisher nur auf "}
        own["我想取消订阅"] = "抱歉，我目前只能用英语回答。"
        assert answer.answer.startswith(own[question])
        assert "only answer in English" in answer.answer


@pytest.mark.parametrize(
    "question",
    [
        "my card was charged twice, can I talk to someone",
        "subtitles won't turn on, I need a real person",
        "I've asked three times, put me through to a manager",
        "How do I cancel? And can I speak to an agent?",
        "my card was charged twice and I need a human to sort it out",
    ],
)
def test_a_request_for_a_person_inside_a_longer_message_is_handed_off(settings, tmp_path, question):
    """A newcomer's trial on their own help centre: the topic clause outweighed the request,
    and these were answered from the topic or declined, as was a request joined to the
    question by "and". Same on a FAQ that is not ours."""
    for assistant in (
        make_assistant(settings, "demo"),
        make_assistant(settings, str(_library_kb(tmp_path))),
    ):
        answer = assistant.answer(question)
        assert (answer.status, answer.handoff_reason) == ("handoff", "requested_human")


@pytest.mark.parametrize(
    "question",
    [
        "This is ridiculous. I was charged twice this month and I want the money back.",
        "how do I reset my password, please",
        "I don't want to talk to a person, just tell me how to cancel",
        "no need for a human, how do I cancel?",
        "don't put me through to anyone, just answer: how do I reset my password",
        "Hi support team, how do I cancel my subscription?",
        "Dear customer service, my card was charged twice",
        "I spoke with your support team yesterday, how long does a refund take?",
        "I don't want to wait on hold and talk to an agent, just tell me the refund policy",
    ],
)
def test_an_angry_or_negated_clause_beside_a_question_is_answered(demo, question):
    """Frustration is read from the whole message, "please" is too short to read alone, a
    clause that says the customer does not want a person is no request for one, and neither
    is a greeting to the team or a mention of it (a reviewer found all 35 of our plain
    questions handed off behind "Hi support team, ")."""
    assert demo.answer(question).status == "answered"


def test_a_calm_request_worded_as_a_demand_is_no_frustration(demo):
    """A newcomer's "under GDPR I want everything you hold about me" was handed off as
    frustrated: KB questions are worded as questions, so the signals took any demand for
    anger until `data/handoff-examples.txt` gave calm statements (`none`) to learn from. The
    message is not among them."""
    assert demo.answer("under GDPR I want everything you hold about me").status != "handoff"


@pytest.mark.parametrize(
    "question", ["can you write me a poem about autumn", "please write me a story about a pirate"]
)
def test_a_task_asked_of_the_assistant_is_no_request_for_a_person(demo, question):
    """A newcomer's "can you write me a poem about autumn" was handed off as a request for a
    person ("can you ... me ... about" as in "can you put me through to someone about"):
    `data/handoff-examples.txt` now gives tasks asked of the assistant as calm `none`
    examples. Neither message is among them."""
    assert demo.answer(question).status == "out_of_scope"


@pytest.mark.parametrize(
    "question, entry",
    [
        ("how do i cancle my subscripton", "cancel-subscription"),
        ("do u take paypall", "payment-methods"),
    ],
)
def test_a_misspelt_question_is_answered(demo, question, entry):
    answer = demo.answer(question)
    assert (answer.status, answer.intent) == ("answered", entry)


def test_the_company_s_name_is_not_searched(demo):
    """The demo KB writes its company's name as a placeholder: searched with the name, this
    message scored under the gate and was declined."""
    assert demo.profile.company_name == "Lumen Stream"
    answer = demo.answer("I got a text saying my Lumen account is suspended with a link to pay")
    assert (answer.status, answer.intent) == ("answered", "phishing-emails")


@pytest.mark.parametrize(
    "name, message, searched",
    [
        ("Lumen Stream", "is lumen stream down?", "is down?"),
        ("Lumen Stream", "Is LumenStream's app down?", "Is app down?"),
        ("Lumen Stream", "is Lumen-Stream down or is it on Lumen?", "is down or is it on?"),
        ("Lumen Stream", "my Lumen account is on hold", "my account is on hold"),
        ("Lumen Stream Inc.", "is lumen stream down?", "is down?"),
        ("Disney+", "is Disney+ down?", "is down?"),
        ("AT&T", "I can't log in to my AT&T account", "I can't log in to my account"),
        ("Zapflix", "is zapflix down?", "is down?"),
        ("Three", "my Three contract ends", "my contract ends"),
        # An English word is a name only capitalised after another word: "lumen" is one.
        ("Lumen Stream", "whats new on lumen", "whats new on lumen"),
        ("Three", "charged three times", "charged three times"),
        ("Three", "Three charges this month", "Three charges this month"),
        # The name's other words and its short ones are no name alone.
        ("Lumen Stream", "can I stream on my TV?", "can I stream on my TV?"),
        ("7-Eleven", "7 dollars for 7 days", "7 dollars for 7 days"),
        ("The Daily Ledger", "the daily digest stopped", "the daily digest stopped"),
        ("The Daily Ledger", "The Daily Ledger app crashes", "app crashes"),
        # Nothing but the name: searched as it is.
        ("Lumen Stream", "Lumen Stream?", "Lumen Stream?"),
        # A reviewer's cases: the "!" that ends the name's sentence stays, "at t" is no
        # AT&T, an address stays whole, and a message without the name is left as written.
        (
            "Lumen Stream",
            "Thanks a lot Lumen Stream! Why was I charged twice?",
            "Thanks a lot! Why was I charged twice?",
        ),
        ("AT&T", "I moved from at t-mobile", "I moved from at t-mobile"),
        ("Lumen Stream", "is lumen-stream.com down?", "is lumen-stream.com down?"),
        ("Lumen Stream", "is  it   down ?", "is  it   down ?"),
        # A second review's: the name's words never run across a sentence's end, and an
        # address with a dash, a slash or a hash stays whole too.
        ("Lumen Stream", "I love Lumen. Stream quality is bad", "I love. Stream quality is bad"),
        ("Zapflix", "visit zapflix-tv.com", "visit zapflix-tv.com"),
        (
            "Zapflix",
            "see https://help.example/zapflix/billing",
            "see https://help.example/zapflix/billing",
        ),
        ("Zapflix", "#zapflix is slow", "#zapflix is slow"),
    ],
)
def test_a_message_is_searched_without_the_company_s_name(name, message, searched):
    from assistant.retrieval.query import name_pattern, without_name
    from assistant.retrieval.spelling import english_words

    assert without_name(message, name_pattern(name, set(), english_words())) == searched


def test_a_name_the_kb_s_questions_use_is_searched_only_when_it_is_an_english_word():
    """A company called "Stream" whose KB asks "Can I stream in 4K?" keeps the word; a made-up
    name is the name even where the KB's own titles use it ("How do I cancel my Pagecast
    membership?")."""
    from assistant.retrieval.query import name_pattern, without_name
    from assistant.retrieval.spelling import english_words

    assert name_pattern("", set()) is None
    assert name_pattern("Stream", {"stream"}, english_words()) is None
    pattern = name_pattern("Zapflix TV", {"zapflix"}, english_words())
    assert without_name("zapflix tv is down", pattern) == "is down"
    assert without_name("my zapflix account", pattern) == "my account"


def test_a_made_up_name_in_one_title_does_not_draw_questions_to_it(settings):
    """A newcomer's audiobook FAQ (tests/data/pagecast-faq.csv) names the company in one
    title only, the cancel entry's: "Can I use Pagecast on my Echo?" found it at 0.99, as the
    name was searched there; without the name it finds the smart-speaker entry."""
    retriever = build_retriever(
        settings,
        knowledge.load_configured(
            settings, str(Path(__file__).parent / "data" / "pagecast-faq.csv")
        ).documents,
    )
    faq = Assistant(retriever, ExtractiveProvider(), knowledge.Profile("Pagecast"))
    answer = faq.answer("Can I use Pagecast on my Echo?")
    assert (answer.status, answer.intent) == ("answered", "smart-speaker")


def test_the_company_s_name_leaves_a_request_for_a_person_as_it_is(demo):
    answer = demo.answer("Lumen Stream support is useless, get me a human")
    assert (answer.status, answer.handoff_reason) == ("handoff", "requested_human")


def test_eval_commands_read_the_served_business_profile(settings):
    from assistant.commands.common import extractive_assistant

    assert extractive_assistant(settings, "demo").profile.company_name == "Lumen Stream"


def test_an_unnamed_company_s_placeholder_name_is_searched(settings):
    """A profile without a company name says "our service": that is no name to leave out."""
    retriever = build_retriever(settings, knowledge.load_configured(settings, "demo").documents)
    unnamed = Assistant(retriever, ExtractiveProvider(), knowledge.Profile())
    assert unnamed.searched("is our service down?") == "is our service down?"


def test_a_repeated_question_is_handed_off(demo):
    history = [Turn("how do I cancel my subscription?", "...")]
    answer = demo.answer("How do I cancel my subscription", history=history)
    assert (answer.status, answer.handoff_reason) == ("handoff", "frustration")


def test_frustration_worded_unlike_the_examples_is_handed_off(demo, settings, tmp_path):
    """The n-grams alone read this as an ordinary message: it shares its meaning with
    `data/handoff-examples.txt` ("what a waste of time"), not its letters. WordLlama's
    embedding beside the n-grams carries it, on any KB. ("still broken, thanks for nothing"
    was such a message until the examples of exasperation were added.)"""
    for assistant in (demo, make_assistant(settings, str(_library_kb(tmp_path)))):
        without = HandoffSignals(
            read_examples(settings.handoff_examples),
            [doc.question for doc in assistant.retriever.documents],
            knowledge.read_lines(settings.out_of_domain),
        )
        message = "well that was a complete waste of my time"
        assert without.detect(message) is None
        answer = assistant.answer(message)
        assert (answer.status, answer.handoff_reason) == ("handoff", "frustration")


@pytest.mark.parametrize(
    "message",
    [
        "I've wasted my entire afternoon on this",
        "honestly I'm so done with this chat",
        "I'm fed up, I'm going round in circles here",
    ],
)
def test_exasperation_without_a_question_is_handed_off(demo, message):
    """Exasperation at the time lost, not only at the answers ("that didn't help"): a
    newcomer's "I've been trying to sort this out for an hour and I'm fed up" was declined."""
    answer = demo.answer(message)
    assert (answer.status, answer.handoff_reason) == ("handoff", "frustration")


@pytest.mark.parametrize(
    "message",
    ["I'm not sure how to change a tyre, can you help me", "I'm wanting you to pick a number"],
)
def test_an_off_topic_request_in_the_first_person_is_declined_not_handed_off(demo, message):
    """Examples of exasperation worded "I'm fed up ...", "I'm at the end of my tether ..." taught
    the n-grams that "I'm" itself is frustrated: these were handed off, and 4 more of CLINC150's
    off-topic questions on the StackFAQ KB. The examples leave the pronoun out."""
    assert demo.answer(message).status == "out_of_scope"


@pytest.mark.parametrize(
    "message, entry",
    [
        (
            "I've tried to cancel three times and I keep going round in circles, I'm sick "
            "of it. Just tell me how to cancel",
            "cancel-subscription",
        ),
        (
            "This is ridiculous, I'm at the end of my tether. Why was I charged twice?",
            "double-charge",
        ),
    ],
)
def test_a_frustrated_first_message_that_asks_something_in_scope_is_answered(demo, message, entry):
    """Read as frustrated, but its anger is at the service and its question is one the KB
    answers: it is answered, after small talk too. After an answer, a decline or a handoff
    the same message is frustration with the assistant, and goes to a person."""
    assert demo.signals.detect(message) == "frustration"
    for history in ([], [Turn("hi", "Hello!", "small_talk")]):
        answer = demo.answer(message, history=history)
        assert (answer.status, answer.intent) == ("answered", entry)
    for status in ("answered", "out_of_scope", "handoff"):
        after = demo.answer(message, history=[Turn("how do I cancel?", "...", status)])
        assert (after.status, after.handoff_reason) == ("handoff", "frustration")


def test_a_repeated_question_is_handed_off_after_small_talk_or_a_handoff(demo):
    """A repeat is frustration whatever came between: the rule that answers an angry first
    message's question must not answer it (a reviewer found it did after small talk)."""
    question = "how do I cancel my subscription?"
    for statuses in (["answered", "small_talk"], ["handoff"], ["abandoned"]):
        history = [Turn(question if i == 0 else "hi", "...", s) for i, s in enumerate(statuses)]
        answer = demo.answer(question, history=history)
        assert (answer.status, answer.handoff_reason) == ("handoff", "frustration")


def test_a_failing_encoder_leaves_the_frustration_signal_to_the_n_grams(demo, settings):
    """A stand-in encoder that raises, on purpose (WordLlama, local, does not fail): fitting
    and reading carry on with the n-grams, as without an encoder."""
    from assistant.retrieval import EncoderError

    class Failing:
        name, batch_size, multilingual, scope_position = "failing", 1, False, None

        def __init__(self, fail_from: int):
            self.calls, self.fail_from = 0, fail_from

        def embed(self, texts):
            self.calls += 1
            if self.calls >= self.fail_from:
                raise EncoderError("down")
            return wordllama_encoder().embed(texts)

    parts = (
        read_examples(settings.handoff_examples),
        [doc.question for doc in demo.retriever.documents],
        knowledge.read_lines(settings.out_of_domain),
    )
    plain = HandoffSignals(*parts)
    messages = [
        "well that was a complete waste of my time",
        "that didn't help",
        "can I talk to a person",
    ]
    for fail_from in (1, 2):  # while fitting; then at the first message read
        signals = HandoffSignals(*parts, encoder=Failing(fail_from))
        assert [signals.detect(m) for m in messages] == [plain.detect(m) for m in messages]
    assert plain.detect(messages[0]) is None


def test_a_long_declined_message_searches_at_most_max_parts_sentences(demo, monkeypatch):
    from assistant.decisions import MAX_PARTS

    rant = " ".join(f"Line {i} of my long story about the weather today." for i in range(20))
    searched: list[str] = []
    search = demo.retriever.search

    def counting(query, k=5):
        searched.append(query)
        return search(query, k)

    monkeypatch.setattr(demo.retriever, "search", counting)
    assert demo.answer(rant).status == "out_of_scope"
    # The whole message, then its first MAX_PARTS sentences.
    assert len(searched) == 1 + MAX_PARTS


def test_a_message_is_classified_by_language_once(demo, monkeypatch):
    """`foreign_language` and the speller's guard both ask for the message's language."""
    from assistant import signals

    calls: list[str] = []
    identifier = signals._identifier()

    class Counting:
        def classify(self, text):
            calls.append(text)
            return identifier.classify(text)

    monkeypatch.setattr(signals, "_identifier", Counting)
    message = "grandmother reckons telly programmes nowadays rubbish honestly"
    # Mostly words the KB lacks, in Latin letters: `foreign_language` asks py3langid too.
    assert demo.answer(message).status == "out_of_scope"
    assert calls.count(message) == 1


def test_a_message_leaning_to_another_language_is_read_on_its_own_words():
    """A newcomer's "kann ich comics offline lesen?" on a comics FAQ: German at 0.44 whole,
    since "comics" and "offline" are the KB's (English) words too, and answered in English
    from an unrelated entry. Its other words, "kann ich lesen", are German at 0.89. An English
    message leaning elsewhere under the bar stays English when its other words are fewer than
    three, or are not surely that language."""
    from assistant.signals import foreign_language, language_of

    known = {"comics", "offline", "read", "can", "i", "how", "do", "my"}
    message = "kann ich comics offline lesen?"
    code, probability = language_of(message)
    assert code == "de" and probability < 0.5
    assert foreign_language(message, "en", known) == "de"
    # Czech at 0.31 whole: "u paypall" is left, two words.
    english = "do u take paypall"
    code, probability = language_of(english)
    assert code != "en" and probability < 0.5
    assert foreign_language(english, "en", known | {"take"}) is None
    # Portuguese at 0.29 whole, and the same three words left.
    english = "is flu contagious"
    code, probability = language_of(english)
    assert code != "en" and probability < 0.5
    assert foreign_language(english, "en", known) is None


def test_ordinary_questions_are_not_handed_off(demo):
    for question in ("how do I cancel my subscription?", "my card was charged twice"):
        assert demo.answer(question).status == "answered", question


def test_decline_names_the_kbs_own_topics(demo):
    answer = demo.answer("what's the weather in Paris?")
    assert answer.status == "out_of_scope"
    assert "Billing" in answer.answer and "Parental controls" in answer.answer
    assert "program schedule" not in answer.answer
    # Every one of the demo's ten categories, the smallest (Contact, Privacy) included.
    categories = {doc.category for doc in demo.retriever.documents}
    assert len(categories) == 10 and all(c in answer.answer for c in categories)
    many = [knowledge.Document(str(n), "q", "a", "", f"Topic {n}") for n in range(14)]
    assert kb_topics(many).endswith("Topic 11 and more")


def test_declined_topics_with_commas_of_their_own_stay_apart():
    """A newcomer's help centre had "Cars, speakers and watches" beside "Transcripts,
    chapters and clips": with commas between the categories too, no one could tell them apart."""
    names = ["Billing", "Billing", "Cars, speakers and watches", "Transcripts, chapters"]
    docs = [knowledge.Document(str(n), "q", "a", "", name) for n, name in enumerate(names)]
    assert kb_topics(docs) == "Billing; Cars, speakers and watches; and Transcripts, chapters"
    # Quotes already part example questions: a comma inside one changes nothing.
    questions = ["Refunds?", "If I cancel, do I lose it?", "Gift cards?"]
    plain = [knowledge.Document(str(n), q, "a", "", "") for n, q in enumerate(questions)]
    assert kb_topics(plain).endswith('"Refunds?", "If I cancel, do I lose it?" and "Gift cards?"')


def test_decline_on_a_kb_without_categories_quotes_questions_from_across_it(settings, tmp_path):
    """A FAQ without categories whose first rows are all billing: the decline quotes a few
    short questions on different topics from its start, middle and end in one sentence, the
    same every time, and gives the support hours with the contacts."""
    rows = [(f"Billing question {n}, about charges and the invoice?", "Yes.") for n in range(9)]
    rows.insert(4, ("Can I get a refund?", "Within 14 days."))
    rows += [(f"Listening question {n}, about playlists and songs?", "Yes.") for n in range(9)]
    rows.insert(15, ("How do I see lyrics?", "Tap the song."))
    # Shorter still, but on the first example's topic: the run's next-shortest is quoted.
    rows.insert(12, ("Refund for a song?", "No."))
    rows += [(f"Devices question {n}, about smart speakers and cars?", "Yes.") for n in range(9)]
    rows.append(("Why am I hearing ads?", "On the free plan."))
    path = tmp_path / "faq.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("question", "answer"), *rows])
    faq = make_assistant(settings, str(path))
    answer = faq.answer("what's the weather in Paris?")
    assert answer.status == "out_of_scope"
    assert (
        'I can help with questions such as "Can I get a refund?", "How do I see lyrics?" and '
        '"Why am I hearing ads?". For anything else'
    ) in answer.answer
    assert answer.answer.endswith(f"({faq.profile.placeholders['CUSTOMER_SUPPORT_HOURS']}).")
    long = knowledge.Document("x", "word " * 40, "answer", "", "")
    shortened = kb_topics([long]).removeprefix('questions such as "')
    assert shortened.endswith('word…"') and len(shortened) <= 61
    # Written without spaces, a long question is cut mid-word, not to a lone "…".
    unspaced = knowledge.Document("x", "如何取消我的订阅并获得退款" * 6, "answer", "", "")
    assert (
        kb_topics([unspaced])
        == 'questions such as "' + ("如何取消我的订阅并获得退款" * 6)[:59] + '…"'
    )
    assert make_assistant(settings, str(path)).replies == faq.replies


def test_decline_examples_do_not_count_a_contraction_as_a_shared_topic():
    """Split at the apostrophe, "What's" would leave "s", and "What's a profile?" and "What's
    the price?" would look like one topic (a reviewer's case)."""
    from assistant.replies import example_questions

    titles = ["What's a profile?", "A much longer first question", "What's the price?"]
    titles += ["Another much longer question", "Which devices work?", "The longest one here"]
    docs = [knowledge.Document(str(n), title, "a", "", "") for n, title in enumerate(titles)]
    assert example_questions(docs) == [
        "What's a profile?",
        "What's the price?",
        "Which devices work?",
    ]


def test_follow_ups_do_not_inherit_an_unrelated_topic(demo):
    password = demo.answer("how do I reset my password?")
    assert password.intent == "reset-password"
    ps5 = demo.answer("can i watch on my ps5?", history=[Turn(password.question, "...")])
    assert ps5.status == "answered" and ps5.intent != "reset-password"
    cancel = demo.answer("how do I cancel my subscription?")
    weather = demo.answer("what's the weather in Paris?", history=[Turn(cancel.question, "...")])
    assert weather.status == "out_of_scope"
    # "won't" in the cancel answer shares no word with it: contractions do not count.
    match = demo.answer("who won the football last night?", history=[Turn(cancel.question, "...")])
    assert match.status == "out_of_scope"
    pancakes = demo.answer("what about a recipe for pancakes?", history=[Turn(cancel.question, "")])
    assert pancakes.status == "out_of_scope"
    # Nothing but function words, or no word at all, points to no topic (a reviewer saw these
    # repeat the cancel answer).
    for empty in ("yes", "?", "who are you?", "where can I get a pizza?"):
        reply = demo.answer(empty, history=[Turn(cancel.question, "...")])
        assert reply.status != "answered" or reply.intent != cancel.intent, empty


@pytest.mark.parametrize(
    "earlier, follow_up",
    [
        ("is there a free trial?", "when does it start?"),
        ("how do I get a refund?", "how long does it take?"),
        ("is there a student discount?", "is there a limit?"),
        ("can I download shows to watch offline?", "and on my phone?"),
        ("which devices can I watch on?", "fire stick?"),
        ("how do I set up parental controls?", "can I set a pin?"),
    ],
)
def test_a_vague_follow_up_is_answered_from_the_earlier_topic(demo, earlier, follow_up):
    """A follow-up made of words the KB already uses brings no topic of its own. A reviewer
    found the first three declined once off-topic follow-ups were held to sharing a word;
    "fire" is on scikit-learn's stop-word list, so "fire stick?" was too."""
    first = demo.answer(earlier)
    followed = demo.answer(follow_up, history=[Turn(earlier, "...")])
    assert followed.status == "answered" and followed.intent == first.intent


@pytest.mark.parametrize(
    "earlier, follow_up, entry",
    [
        ("how do I cancel my subscription?", "is it available on xbox?", "watch-on-ps5"),
        ("how do I cancel my subscription?", "also, can I change my password?", "reset-password"),
        ("Which devices can I watch on?", "how do I cancel it?", "cancel-subscription"),
    ],
)
def test_a_follow_up_with_a_pronoun_that_names_its_own_topic_keeps_it(
    demo, earlier, follow_up, entry
):
    """A reviewer found these answered from the earlier topic once any pronoun let the merged
    retrieval win: each finds its own entry as well as a typical question of the KB does."""
    followed = demo.answer(follow_up, history=[Turn(earlier, "...")])
    assert (followed.status, followed.intent) == ("answered", entry)


def test_a_repeated_misspelt_question_is_still_a_repeat(demo):
    """The repeat is the message as asked: history keeps it uncorrected."""
    question = "how do i cancle my subscripton"
    again = demo.answer(question, history=[Turn(question, "...")])
    assert (again.status, again.handoff_reason) == ("handoff", "frustration")


def test_a_follow_up_on_another_aspect_of_the_topic_is_answered_from_it(demo):
    """ "what about premium?" alone finds another entry or none, and the screens entry is not
    among its own hits; it continues the conversation ("what about"), whose entry names
    Premium, so that entry answers (a newcomer's trial saw this declined)."""
    screens = demo.answer("How many people can watch at the same time on Basic?")
    assert screens.intent == "how-many-screens"
    alone = demo.answer("what about premium?")
    assert alone.status != "answered" or alone.intent != "how-many-screens"
    premium = demo.answer("what about premium?", history=[Turn(screens.question, "...")])
    assert premium.status == "answered" and premium.intent == "how-many-screens"


def test_asking_how_to_contact_the_team_is_answered_from_the_kbs_contact_entry(settings):
    """Asking how to reach a person is a handoff, but "how can I contact you?" on a FAQ with a
    contact entry is a question for that entry: examples naming contact without a person
    made it a handoff on this 13-entry FAQ (a reviewer's find)."""
    faq = make_assistant(settings, str(Path(__file__).parent / "data" / "reelhouse-faq.csv"))
    for question in ("how can I contact you?", "how do I contact support?"):
        answer = faq.answer(question)
        assert (answer.status, answer.intent) == ("answered", "contact"), question
    assert faq.answer("how do I get hold of a real person").status == "handoff"


def test_a_follow_up_declined_alone_needs_no_confidence_to_beat(settings):
    """A declined question's confidence is its softmax over hits it was not given: "and on
    premium?" after a Basic-screens question was declined alone at 0.71 on a newcomer's FAQ
    (tests/data/reelhouse-faq.csv), and the merged question (0.46, the screens entry) was
    held to beat that, so it was declined."""
    faq = make_assistant(settings, str(Path(__file__).parent / "data" / "reelhouse-faq.csv"))
    first = "how many screens can I use on basic?"
    assert faq.answer(first).intent == "screens"
    alone = faq.retriever.search("and on premium?")
    assert not alone.in_scope and alone.confidence > 0.5, "the case this test is about moved"
    followed = faq.answer("and on premium?", history=[Turn(first, "...")])
    assert (followed.status, followed.intent) == ("answered", "screens")


needs_shared = pytest.mark.skipif(not STACKFAQ.is_dir(), reason=NO_SHARED)


@needs_shared
def test_stackfaq_retrieval_and_scope_meet_the_default_targets(settings):
    """Issue 11's default-install targets on StackFAQ's dev half (no labels, one entry each)."""
    assistant = make_assistant(settings, str(STACKFAQ / "kb.csv"))
    queries = read_queries(STACKFAQ / "queries.csv")
    metrics = retrieval_metrics(assistant.retriever, queries)
    assert metrics["id_at_1"] >= 0.85 and metrics["id_mrr"] >= 0.90, metrics
    off_topic = [q.text for q in read_queries(OUT_OF_SCOPE)]
    scope = scope_metrics(assistant, [q.text for q in queries], off_topic)
    assert scope["in_scope_answered"] >= 0.90, scope
    assert scope["out_of_scope_declined"] >= 0.90, scope


@needs_shared
def test_restart_loads_the_cached_index(settings, tmp_path):
    cached = replace(settings, data_dir=tmp_path)
    docs = knowledge.read_file(STACKFAQ / "kb.csv")
    first = build_retriever(cached, docs)
    assert list(tmp_path.glob("cache/index-*.pkl"))
    again = build_retriever(cached, docs)
    assert again is not first and again.encoder is not None
    assert again.search("delete my facebook account").hits[0].document.id == "sf001"


@pytest.mark.parametrize(
    "message, searched",
    [
        ("I don't want to cancel, I want to upgrade", "I want to upgrade"),
        ("not the app language, I want bigger subtitles", "I want bigger subtitles"),
        ("my video doesn't play, what do I do", "my video doesn't play, what do I do"),
        ("how do I cancel?", "how do I cancel?"),
        # Run together without a comma, or set off by a dash.
        (
            "I don't want to delete my account I just want to change my email",
            "I just want to change my email",
        ),
        (
            "not asking about downloads \u2014 how is the sound improved?",
            "how is the sound improved",
        ),
        # Asking to stop something is the request itself, but not to stop a stop.
        (
            "I don't want the newsletter anymore, I want to keep my plan",
            "I don't want the newsletter anymore, I want to keep my plan",
        ),
        ("I don't want to cancel anymore, I want to keep my plan", "I want to keep my plan"),
        # A want after "when" or "if" is a condition of its clause, not a new clause.
        (
            "I don't want to lose my list when I want to cancel",
            "I don't want to lose my list when I want to cancel",
        ),
    ],
)
def test_a_clause_saying_what_is_not_wanted_is_not_searched(message, searched):
    from assistant.retrieval.query import search_text

    assert search_text(message) == searched


@pytest.mark.parametrize(
    "message, refers",
    [
        ("how long does it take?", True),
        ("what about premium?", True),
        ("and on my phone?", True),
        ("can they see my history?", True),
        ("can i watch on my ps5?", False),
        ("what's the weather in Paris?", False),
        ("Android phones?", False),
    ],
)
def test_a_message_that_points_to_the_earlier_topic(message, refers):
    from assistant.retrieval.query import refers_back

    assert refers_back(message) is refers


def test_a_dash_between_spaces_ends_a_clause_and_a_hyphen_does_not():
    from assistant.retrieval.query import clauses

    assert clauses("is sign-in - or sign-up \u2014 free?") == ["is sign-in", "or sign-up", "free"]


def test_a_shouted_question_is_answered_as_the_same_question(demo):
    shouted = demo.answer("WHY WAS I CHARGED TWICE THIS MONTH?!?! this is theft")
    calm = demo.answer("why was i charged twice this month?!?! this is theft")
    assert shouted.status == calm.status == "answered"
    assert shouted.intent == calm.intent == "double-charge"
    # An acronym or two is not shouting.
    from assistant.retrieval.query import search_text

    assert search_text("is HBO on my 4K TV?") == "is HBO on my 4K TV?"


def test_negated_intent_finds_the_wanted_entry(demo):
    answer = demo.answer("I don't want to cancel my subscription, I want to upgrade my plan")
    assert answer.status == "answered" and answer.intent == "change-plan"


def test_customer_questions_file_is_well_formed(settings):
    """Our own customer-worded set: expectations exist in the demo KB, kinds are covered."""
    path = settings.demo_kb.parent / "customer-questions.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    ids = {doc.id for doc in knowledge.read_file(settings.demo_kb)}
    assert len(rows) >= 150
    assert {r["demo"] for r in rows} - {"handoff", "decline"} <= ids
    languages = {r["language"] for r in rows if r["kind"] == "foreign"}
    assert len(languages) >= 5
    kinds = {r["kind"] for r in rows}
    assert {"typo", "short", "complaint", "two_questions", "negation", "indirect"} <= kinds
    assert {"foreign", "frustration", "human", "off_topic", "near_media_off_topic"} <= kinds


def test_nobody_who_asks_for_a_person_is_declined(settings, demo):
    from assistant.evaluation import outcome_metrics, read_expectations

    rows = read_expectations(settings.demo_kb.parent / "customer-questions.csv", "demo")
    metrics = outcome_metrics(demo, [r for r in rows if r.kind in {"human", "off_topic"}])
    assert metrics["asked_for_a_person_but_declined"] == 0, metrics["misses"]
    assert metrics["right_human"] == 1.0, metrics["misses"]
    assert metrics["right_off_topic"] >= 0.9, metrics["misses"]


def test_a_complaint_s_own_question_is_answered_when_the_whole_is_declined(settings):
    """A newcomer's music-app FAQ (42 entries, tests/data/tunely-faq.csv): the complaint as a
    whole scored under the gate, nearest the password entry, and its question alone finds
    the refunds entry at 0.94 confidence. A question had to agree with the whole message's
    top entry; now one that stands alone is enough. One that leans on the rest ("make it
    stop", alone the private-session entry at 0.61) or names nothing the KB speaks of ("What
    should I do?", alone the hacked-account entry at 0.996) still is not."""
    faq = make_assistant(settings, str(Path(__file__).parent / "data" / "tunely-faq.csv"))
    answer = faq.answer(
        "I've been a customer for six years and you just charged my card AGAIN after I "
        "cancelled last month. This is theft. How do I get my money back??"
    )
    assert (answer.status, answer.intent) == ("answered", "refunds")
    drums = "My neighbour plays drums all night and the council does nothing."
    for question in ("How do I make it stop?", "What should I do?"):
        assert faq.answer(f"{drums} {question}").status == "out_of_scope", question


def test_a_declined_message_s_question_joined_by_and_can_stand_alone(settings):
    """ "And how do I get my money back??" leans on nothing: the "and" joins it to the rest,
    where "and what about premium?" or a pronoun ("And how do I make it stop?") would lean
    on it. Read as a continuation, the newcomer's complaint was declined either way it was
    punctuated."""
    faq = make_assistant(settings, str(Path(__file__).parent / "data" / "tunely-faq.csv"))
    complaint = (
        "I've been a customer for six years and you just charged my card AGAIN after I "
        "cancelled last month"
    )
    for message in (
        f"{complaint}. This is theft. And how do I get my money back??",
        f"{complaint}, this is theft, and how do I get my money back??",
    ):
        answer = faq.answer(message)
        assert (answer.status, answer.intent) == ("answered", "refunds"), message
    drums = "My neighbour plays drums all night and the council does nothing."
    assert faq.answer(f"{drums} And how do I make it stop?").status == "out_of_scope"


def test_a_declined_message_s_question_found_unsurely_alone_stays_declined(settings):
    """A question standing alone answers for a declined message only as sure as a second
    question must be (SECOND_QUESTION_SURE): after a rant about paint, "Can my playlist have
    more songs?" alone is in scope, names the KB's playlists, leans on nothing, yet finds the
    create-playlist entry at only 0.45 confidence, and the newcomer's FAQ says nothing of a
    playlist's size."""
    faq = make_assistant(settings, str(Path(__file__).parent / "data" / "tunely-faq.csv"))
    question = "Can my playlist have more songs?"
    alone = faq.retriever.search(question, 5)
    assert alone.in_scope and alone.confidence < SECOND_QUESTION_SURE
    assert faq.retriever.names_a_kb_word(question)
    rant = (
        "I spent the whole weekend repainting my kitchen, the paint store sold me the wrong "
        "colour twice and nobody there ever apologised."
    )
    assert faq.answer(f"{rant} {question}").status == "out_of_scope"


def test_a_declined_complaint_s_sure_statement_answers_when_its_question_does_not(demo):
    """A complaint declined as a whole (nearest the TV entry) whose question ("What is going
    on with your streaming??") finds the data-usage entry at only 0.50: its statement "Every
    single evening the show freezes and spins every few minutes." finds the buffering entry
    at 0.99 alone, and answers. Its other statement, "I pay for Premium and get a worse
    picture than free TV." (the yearly plan at 0.89, under STATEMENT_SURE), does not."""
    freezes = "Every single evening the show freezes and spins every few minutes."
    worse = "I pay for Premium and get a worse picture than free TV."
    question = "What is going on with your streaming??"
    answer = demo.answer(f"Absolutely fed up. {freezes} {worse} {question}")
    assert (answer.status, answer.intent) == ("answered", "buffering")
    alone = demo.retriever.search(worse, 5)
    assert alone.in_scope and alone.confidence < STATEMENT_SURE
    assert demo.answer(f"Absolutely fed up. {worse} {question}").status == "out_of_scope"


def test_an_emphatic_complaint_declined_goes_to_a_person(demo):
    """A complaint the demo KB declines (nearest the price-increase entry, under the gate) is
    handed off when it shouts: two newcomers' angry double-charge messages were told "I can't
    help with that". The same words without the capitals are still declined."""
    said = (
        "My husband and I have been subscribers since you launched and the last two bills "
        "were higher than what we signed up for {again}."
    )
    calm = demo.answer(said.format(again="again"))
    assert calm.status == "out_of_scope"
    shouted = demo.answer(said.format(again="AGAIN"))
    assert (shouted.status, shouted.handoff_reason) == ("handoff", "frustration")
    assert shouted.sources == []
    exclaimed = demo.answer(said.format(again="again") + " This is a disgrace!")
    assert (exclaimed.status, exclaimed.handoff_reason) == ("handoff", "frustration")
    # In capitals, the company's name and a name the KB writes ("Roku") are no shouts.
    for name in ("on LUMEN", "on my ROKU"):
        assert demo.answer(said.format(again=name)).status == "out_of_scope", name


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("I have written to you FOUR times about the sound cutting out on every film", True),
        ("the subtitles have been two seconds behind on every show for weeks now, fix it!", True),
        ("Does anyone know of a site where I could build old MS-DOS style character art", False),
        ("Is there a way to watch the new HBO series on my laptop while I am abroad", False),
        ("Hi there team! Could you tell me what the weather will be like in Lisbon", False),
        ("my bill went up AGAIN", False),
        ("I need to make a quick decision, so roll a dice!", False),
        ("the subtitles have been two seconds behind on every show for weeks now. Fix it!", True),
        ("Can I watch HBO MAX shows on your service while travelling abroad with my family", False),
        ("Where is the nearest ATM to your office, I need some cash for the parking meter", False),
        ("Love the app! Quick question, who won the football match last night in London?", False),
        ("Thanks so much for the help yesterday! Can you tell me what the weather will be", False),
        ("Tell me a joke please! I have had such a long and boring day at the office today", False),
        ("LOVE the new season, quick question: who won the match last night in London?", False),
    ],
)
def test_emphasis_is_shouted_english_or_an_exclamation_in_a_long_enough_message(message, expected):
    """`signals.emphatic`: in a message of COMPLAINT_WORDS words or more, an English word in
    capitals where the message is not friendly, or an exclamation mark outside small talk
    where it is not positive at all; an acronym is no shout, even one that is an English word
    ("MAX", "ATM"), nor is a word the KB writes in capitals."""
    assert emphatic(message) is expected
    if "FOUR" in message:
        assert not emphatic(message, frozenset({"FOUR"}))


LIBRARY_FAQ = [
    ("How long can I borrow a book?", "Books are lent for three weeks and can be renewed twice."),
    ("How do I renew a loan?", "Renew online under My Loans or at any desk."),
    ("What are the opening hours?", "We are open 9 to 8 on weekdays and 10 to 4 on Saturdays."),
    ("How do I get a library card?", "Bring a photo ID and proof of address to any branch."),
    ("Can I reserve a book that is out?", "Yes, place a hold and we email you when it is back."),
    ("What happens if I return a book late?", "Late returns pay 20 cents a day per item."),
    ("Do you have study rooms?", "Study rooms can be booked for two hours a day online."),
    ("Can I print at the library?", "Printing costs 10 cents a page from any public computer."),
    ("Do you lend e-books?", "E-books and audiobooks are lent through our reading app."),
    ("I lost a book, what now?", "Report it at the desk; we charge its replacement cost."),
]


def _library_kb(tmp_path) -> Path:
    """LIBRARY_FAQ as a team's `question,answer` CSV."""
    path = tmp_path / "library.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        writer.writerows(LIBRARY_FAQ)
    return path


def test_an_elliptical_follow_up_takes_the_previous_question(settings, tmp_path):
    assistant = make_assistant(settings, str(_library_kb(tmp_path)))
    first = assistant.answer("what time do you open?")
    assert first.sources[0].question == "What are the opening hours?"
    assert assistant.answer("what about sundays?").status == "out_of_scope"
    followed = assistant.answer("what about sundays?", history=[Turn(first.question, "...")])
    assert followed.status == "answered"
    assert followed.sources[0].question == "What are the opening hours?"


def test_off_topic_follow_ups_on_a_small_faq_keep_their_own_decline(settings, tmp_path):
    """On a 10-entry FAQ any question's five hits hold half the topics, and "in", "is" or "it"
    are used by fewer than half of the answers: before, 31 of these 60 follow-ups were
    answered from the topic before them (a newcomer's trial found it on a 32-entry FAQ). Two
    are left: "tell me a joke" already has the opening hours as its own best hit, at a
    confidence the few entries make easy, and "what time is it?" brings no word the KB lacks
    after the lost-book entry."""
    assistant = make_assistant(settings, str(_library_kb(tmp_path)))
    off_topic = (
        "what's the weather in Paris?",
        "tell me a joke",
        "who is the president?",
        "give me a banana bread recipe",
        "best pizza near me?",
        "what time is it?",
    )
    answered = [
        (earlier, question)
        for earlier, _ in LIBRARY_FAQ
        for question in off_topic
        if assistant.answer(question, history=[Turn(earlier, "...")]).status == "answered"
    ]
    assert len(answered) <= 2, answered


def test_a_small_faq_of_unrelated_topics_still_declines_off_topic(settings, tmp_path):
    assistant = make_assistant(settings, str(_library_kb(tmp_path)))
    # A word the KB uses in another sense still fools it ("book me a flight", 0.45 against a
    # 0.35 gate with WordLlama): see the README's limits.
    for question in ("who won the football last night", "what is the capital of France"):
        assert assistant.answer(question).status == "out_of_scope", question
    assert assistant.answer("when do you open on saturday").status == "answered"


def test_eval_files_in_another_encoding_name_the_file(tmp_path):
    from assistant.evaluation import read_expectations

    path = tmp_path / "q.csv"
    path.write_bytes("question,id\nréservé,x\n".encode("latin-1"))
    with pytest.raises(ValueError, match="q.csv: not UTF-8"):
        read_queries(path)
    with pytest.raises(ValueError, match="q.csv: not UTF-8"):
        read_expectations(path, "demo")
    lines = tmp_path / "off-topic.txt"
    lines.write_text("# a comment\nbook a flight\n\nwhat's the weather\n", encoding="utf-8")
    assert [q.text for q in read_queries(lines)] == ["book a flight", "what's the weather"]


@pytest.mark.parametrize(
    "content, error",
    [("question,answer\nréservé,oui\n".encode("latin-1"), "not UTF-8"),
     (b"question,answer\n", "no entries")],
)  # fmt: skip
def test_serve_refuses_an_unreadable_or_empty_kb_in_one_line(
    database_url, tmp_path, content, error
):
    """In a process of its own, as deployed: `serve` patches the standard library for gevent
    workers first, which would change this test process for every test after it. An empty KB
    is refused too: served, it would decline every question."""
    path = tmp_path / "kb.csv"
    path.write_bytes(content)
    env = {
        **os.environ,
        "KB_PATH": str(path),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "the knowledge base cannot be loaded" in result.stderr
    assert error in result.stderr and "Traceback" not in result.stderr


def test_eval_commands_take_an_article_folder(articles, tmp_path):
    import json

    from click.testing import CliRunner

    from assistant.cli import main

    queries = tmp_path / "q.csv"
    queries.write_text(
        "question,id\nmy card got charged two times,billing/refunds.md#charged-twice\n"
        "does it work on my playstation,devices.html#watch-on-a-game-console\n",
        encoding="utf-8",
    )
    env = {"DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(
        main,
        ["eval", "retrieval", "--kb", str(articles), "--queries", str(queries), "--json"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{") :])
    assert metrics["id_at_1"] == 1.0 and "intent_at_1" not in metrics
    off = tmp_path / "off.txt"
    off.write_text("what's the weather in Paris\nhow do I bake bread\n", encoding="utf-8")
    result = CliRunner().invoke(
        main,
        ["eval", "oos", "--kb", str(articles), "--in-scope", str(queries),
         "--out-of-scope", str(off), "--json"],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scope = json.loads(result.output[result.output.index("{") :])
    assert scope["out_of_scope_declined"] == 1.0 and scope["in_scope_answered"] == 1.0


BRANDED_FAQ = [
    ("How do I end my Orbit Play subscription?", "Go to Profile > Plan > End subscription."),
    ("How much does Orbit Play cost each month?", "Orbit Play is $8 a month, or $80 a year."),
    ("How do I change my Orbit Play password?", "Choose Forgot password on the sign-in page."),
    ("Which TVs and consoles run Orbit Play?", "Samsung, LG, Roku, PlayStation and Xbox."),
    ("Can I download Orbit Play films to my phone?", "Yes: tap the arrow beside a film."),
    ("Does Orbit Play have subtitles?", "Every film has subtitles in English and Spanish."),
    ("How many screens can stream Orbit Play at once?", "Two screens at the same time."),
    ("How do I set up an Orbit Play kids profile?", "Add a profile and switch on Kids mode."),
    ("Why does Orbit Play keep buffering?", "Check your connection speed and restart the app."),
    ("How do I get a refund from Orbit Play?", "Write to billing@orbit.example within 14 days."),
    ("Can I use a gift card on Orbit Play?", "Redeem it at orbit.example/redeem."),
    ("How do I contact Orbit Play support?", "Chat with us at orbit.example/help, 8am-8pm."),
]


class Positioned:
    """The configured local encoder with its own hybrid gate position."""

    def __init__(self, encoder, position: float | None):
        self._encoder = encoder
        self.name, self.batch_size = encoder.name, encoder.batch_size
        self.multilingual, self.scope_position = False, position

    def embed(self, texts):
        return self._encoder.embed(texts)


def test_the_scope_gate_sits_where_the_encoder_places_it_unless_the_settings_do(settings):
    """Encoders spread their scores differently (MiniLM places its gate at 0.55): the gate
    moves with the encoder's own position, and a position in the retrieval settings wins."""
    encoder = make_encoder(settings)
    docs = [Document(str(i), q, a, "", "") for i, (q, a) in enumerate(BRANDED_FAQ)]
    background = knowledge.read_lines(settings.out_of_domain)

    def gate(position: float | None, tuned: RetrievalSettings = RetrievalSettings()) -> float:
        return Retriever(docs, tuned, background, Positioned(encoder, position)).hybrid_threshold

    default, low, high = gate(None), gate(0.1), gate(0.9)
    assert low < default < high
    assert gate(None, RetrievalSettings(scope_position=0.5)) == pytest.approx(default)
    assert gate(0.9, RetrievalSettings(scope_position=0.5)) == pytest.approx(default)


def test_a_product_name_in_every_title_does_not_raise_the_scope_gate(settings, tmp_path):
    """Teams name their product in every FAQ title, and their customers seldom do. The
    gate, placed by how alike the KB's titles are to each other, must not count the name
    that makes them alike (a newcomer's 12-entry FAQ declined 5 of 12 real questions)."""

    def gate(rows: list[tuple[str, str]]) -> Assistant:
        path = tmp_path / f"faq-{len(list(tmp_path.iterdir()))}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("question", "answer"), *rows])
        return make_assistant(replace(settings, data_dir=tmp_path / "data"), str(path))

    named = gate(BRANDED_FAQ)
    unnamed = gate(
        [(q.replace("Orbit Play ", "").replace(" Orbit Play", ""), a) for q, a in BRANDED_FAQ]
    )
    assert abs(named.retriever.hybrid_threshold - unnamed.retriever.hybrid_threshold) < 0.05
    for question in (
        "how do I cancel my subscription",
        "what does it cost per month",
        "forgot my pasword",
    ):
        assert named.answer(question).status == "answered", question
    for question in ("what's the weather in Paris?", "how do I bake bread?"):
        assert named.answer(question).status == "out_of_scope", question


def test_a_teams_own_kb_with_the_demo_profile_is_warned_of(settings, tmp_path, caplog):
    """Declines and handoffs speak for the business profile: a team that sets KB_PATH but
    not BUSINESS_PROFILE would send its customers to the demo company's phone line."""
    from assistant.rag import build_assistant

    faq = PROJECT_ROOT / "tests" / "data" / "reelhouse-faq.csv"
    with caplog.at_level(logging.WARNING, logger="assistant.rag"):
        build_assistant(settings, str(faq))
    assert "BUSINESS_PROFILE is the demo's" in caplog.text and "Lumen Stream" in caplog.text
    # A copy not yet edited speaks for the demo company all the same.
    copied = tmp_path / "copied.yaml"
    copied.write_text(settings.profile_path.read_text(encoding="utf-8"), encoding="utf-8")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="assistant.rag"):
        build_assistant(replace(settings, profile_path=copied), str(faq))
    assert "BUSINESS_PROFILE is the demo's" in caplog.text
    caplog.clear()
    own = tmp_path / "profile.yaml"
    own.write_text("company_name: Reelhouse\nplaceholders:\n  COMPANY_NAME: Reelhouse\n")
    with caplog.at_level(logging.WARNING, logger="assistant.rag"):
        answer = build_assistant(replace(settings, profile_path=own), str(faq)).answer(
            "what's the weather in Paris?"
        )
        build_assistant(settings, "demo")
        build_assistant(settings, str(settings.demo_kb))
    assert "BUSINESS_PROFILE" not in caplog.text and "Reelhouse" in answer.answer
    # The template's made-up shop, copied and not yet edited, reads as a real business.
    template = tmp_path / "template.yaml"
    template.write_text(
        (settings.demo_kb.parent / "business-profile-template.yaml").read_text(encoding="utf-8")
    )
    with caplog.at_level(logging.WARNING, logger="assistant.rag"):
        build_assistant(replace(settings, profile_path=template), str(faq))
    assert "BUSINESS_PROFILE is still the template's example" in caplog.text


@pytest.mark.parametrize(
    "message, asked",
    [
        (
            "How do I cancel? And will I lose my list if I do?",
            ["How do I cancel?", "And will I lose my list if I do?"],
        ),
        (
            "how do I cancel and will I get a refund for this month?",
            ["how do I cancel", "and will I get a refund for this month?"],
        ),
        (
            "Can I watch on my Xbox, and does it do 4K?",
            ["Can I watch on my Xbox", "and does it do 4K?"],
        ),
        ("I was charged twice. Can I get a refund?", ["Can I get a refund?"]),
        # Orders and statements open with an auxiliary too, but not before a subject.
        ("Do not charge me again. Can't log in. How do I cancel?", ["How do I cancel?"]),
        ("rock and roll is what I like", []),
        # An exclamation, not a question: it once answered the message from new releases.
        ("Honestly, what a week. Can we have two profiles?", ["Can we have two profiles?"]),
        ("what a good deal is the yearly plan?", ["what a good deal is the yearly plan?"]),
        # A request for an answer asks a question too; "tell me about it" asks none.
        ("I'm sick of it. Just tell me how to cancel!!", ["Just tell me how to cancel!!"]),
        ("tell me about it, the app is so slow", []),
        # A request worded as a statement asks too; "also" is left for `without_joiner`.
        (
            "I need to pause my plan while I'm away, and also how do I change my card?",
            ["I need to pause my plan while I'm away", "also how do I change my card?"],
        ),
        (
            "I'd like to change my email. Will my history stay?",
            ["I'd like to change my email", "Will my history stay?"],
        ),
        ("I was charged twice, we want to get the money back", ["we want to get the money back"]),
        ("I wanna cancel my plan", ["I wanna cancel my plan"]),
        ("I actually need to cancel my plan", ["I actually need to cancel my plan"]),
    ],
)
def test_the_questions_a_message_asks(message, asked):
    from assistant.retrieval.query import questions

    assert questions(message) == asked


@pytest.mark.parametrize(
    "message, entry",
    [
        (
            "Honestly, what a week. My husband and I argue every night about the remote. "
            "Can we have separate profiles on one account?",
            "manage-profiles",
        ),
        (
            "My mother is visiting from Portugal next week. She doesn't speak English and "
            "wants Portuguese subtitles on everything.",
            "subtitles-on-off",
        ),
    ],
)
def test_a_complaint_declined_as_a_whole_is_answered_from_its_part(demo, message, entry):
    """The rest of a long complaint dilutes its topic under the gate: its question, else its
    best sentence, in scope alone and agreeing with the whole message's best entry, answers."""
    assert not demo.retriever.search(message).in_scope
    answer = demo.answer(message)
    assert (answer.status, answer.intent) == ("answered", entry)


@pytest.mark.skipif(not (SHARED_DATA / "bitext-media-dev.csv").is_file(), reason=NO_SHARED)
def test_a_part_agrees_with_the_whole_by_intent_on_a_labelled_kb(settings):
    """On a labelled KB the part and the whole rank different entries of one intent: the
    agreement is on the intent (compared by entry, this was declined)."""
    bitext = make_assistant(settings, str(SHARED_DATA / "bitext-media-dev.csv"))
    message = (
        "How do I reset my password? Also who won the football match last night and what was "
        "the score?"
    )
    assert not bitext.retriever.search(message).in_scope
    answer = bitext.answer(message)
    assert (answer.status, answer.intent) == ("answered", "recover_password")


@needs_shared
def test_a_declined_message_is_not_answered_from_a_part_on_another_topic(settings):
    """On StackFAQ, whose entries are not about streaming, "Sort it out." alone finds a
    spreadsheet-sorting entry that the whole complaint does not rank first. Said with an
    exclamation mark the complaint goes to a person (`signals.emphatic`), still not answered
    from that entry."""
    library = make_assistant(settings, str(STACKFAQ / "kb.csv"))
    message = (
        "Worst evening ever. The sound is out of sync with the picture on every film I put "
        "on. Sort it out{mark}"
    )
    assert library.retriever.search("Sort it out.").in_scope
    assert library.answer(message.format(mark=".")).status == "out_of_scope"
    shouted = library.answer(message.format(mark="!"))
    assert (shouted.status, shouted.handoff_reason) == ("handoff", "frustration")


def test_two_answers_keep_the_order_asked_when_no_question_ranks_the_whole_first(demo):
    """The whole message's top entry may be only a question's second hit: its answer still
    comes where that question was asked. Retrievals built by hand, to fix which question ranks
    which entry where."""
    entry = {doc.id: doc for doc in demo.retriever.documents}

    def found(*names: str) -> SearchResult:
        hits = [Hit(entry[name], 1.0 - rank / 10) for rank, name in enumerate(names)]
        return SearchResult(hits, None, None, 0.9, True, 2.0)

    first_asked = found("cancel-subscription", "pause-subscription")
    then_asked = found("download-offline", "watchlist")
    whole = found("watchlist", "cancel-subscription").hits
    pair = demo._two_topics([first_asked, then_asked], whole)
    assert [hit.document.id for hit in pair] == ["cancel-subscription", "watchlist"]


def test_a_declined_message_s_request_answers_as_its_question(demo):
    """A request worded as a statement is the question of a message declined as a whole:
    "I need to pause my plan while I'm away." finds the pause entry at 0.84 alone, which a
    statement (STATEMENT_SURE) would not answer from."""
    request = "I need to pause my plan while I'm away."
    alone = demo.retriever.search(request)
    assert alone.in_scope and SECOND_QUESTION_SURE <= alone.confidence < STATEMENT_SURE
    message = f"We are off to Spain for the whole summer with the kids and the dog. {request}"
    answer = demo.answer(message)
    assert (answer.status, answer.intent) == ("answered", "pause-subscription")


def test_a_request_beside_a_question_is_answered_as_a_second_question(demo):
    """A newcomer's "I need to stop the paper while I'm on holiday, and also how do I change
    my card details?" got the card steps alone: the request, worded as a statement, was not
    one of the message's questions. After a question, a request may say why, not what, and
    needs a statement's confidence (STATEMENT_SURE): alone, "I want to switch to another
    service." finds the profiles entry at 0.6 to 0.9. A request to know is a question."""
    answer = demo.answer(
        "I need to pause my plan while I'm away, and also how do I change my card?"
    )
    assert answer.cited_sources == ["pause-subscription", "update-payment-method"]
    answer = demo.answer(
        "How do I turn on subtitles? I need to know how to change my password too."
    )
    assert answer.cited_sources == ["subtitles-on-off", "reset-password"]
    reason = "I want to switch to another service."
    alone = demo.retriever.search(reason)
    assert SECOND_QUESTION_SURE <= alone.confidence < STATEMENT_SURE
    assert demo.retriever.in_scope_beside(alone)
    answer = demo.answer(f"How do I cancel my plan? {reason}")
    assert answer.cited_sources == ["cancel-subscription"]


def test_two_questions_about_two_entries_are_answered_from_both(demo):
    """Extractively, the two entries' answers one after the other, each under its title (a
    newcomer could not tell which answered what), both cited; streamed the same. A statement
    beside a question, or an off-topic second question, adds nothing."""
    cancel, watchlist = (
        next(doc for doc in demo.retriever.documents if doc.id == name)
        for name in ("cancel-subscription", "watchlist")
    )
    message = "How do I cancel? And will I lose my list if I do?"
    answer = demo.answer(message)
    assert answer.status == "answered" and answer.intent == "cancel-subscription"
    assert answer.cited_sources == ["cancel-subscription", "watchlist"]
    assert [source.id for source in answer.sources[:2]] == answer.cited_sources
    filled = [
        demo.profile.fill(f"**{doc.question}**\n\n{doc.response}") for doc in (cancel, watchlist)
    ]
    assert answer.answer == "\n\n".join(filled)
    *deltas, streamed = demo.stream(message)
    assert "".join(deltas) == streamed.answer == answer.answer
    # In the order asked, though the whole message ranks the cancel entry first.
    asked = "How much is the monthly plan? And how do I cancel my subscription?"
    assert demo.retriever.search(asked).intent == "cancel-subscription"
    ordered = demo.answer(asked)
    assert ordered.cited_sources == ["monthly-price", "cancel-subscription"]
    assert ordered.intent == "monthly-price"
    for single in (
        "I was charged twice. Can I get a refund?",
        "How do I cancel? And what's the weather in Paris?",
    ):
        assert len(demo.answer(single).cited_sources) == 1, single

"""The Gradio front end: a gr.ChatInterface over the HTTP API, with like/dislike sent to
POST /feedback.

`make gradio` runs it; ASSISTANT_URL names the API, GRADIO_SERVER_PORT the port (7860).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr
from cachetools import TTLCache

from assistant.client import ApiError, AssistantClient, answer_facts, feedback_thanks

EXAMPLES = [
    "How do I cancel my subscription?",
    "My card was charged twice this month",
    "Can I watch with Spanish subtitles on my TV?",
]


def details(body: dict[str, Any]) -> str:
    """Status, intent and confidence under the answer (`answer_facts`), and its sources folded
    away; an answer without sources (small talk, a decline) gets no empty box."""
    text = f"\n\n<sub>{html.escape(' · '.join(answer_facts(body)))}</sub>"
    if not body["sources"]:
        return text
    sources = "".join(
        f"<li>{html.escape(source['question'])} <code>{html.escape(source['intent'])}</code>"
        f" · score {source['score']:.2f}</li>"
        for source in body["sources"]
    )
    return (
        f"{text}\n\n<details><summary>Sources ({len(body['sources'])})</summary>"
        f"<ol>{sources}</ol></details>"
    )


def build(client: AssistantClient) -> gr.Blocks:
    # The API issues session ids, unguessable, where Gradio's own come from the browser: each
    # tab's questions go on in the session the API issued to its first one (kept a day).
    sessions: TTLCache[str, str] = TTLCache(maxsize=10_000, ttl=24 * 3600)
    sessions_lock = threading.Lock()

    def respond(message: str, history: list[dict], request: gr.Request) -> Iterator[Any]:
        text = ""
        with sessions_lock:
            session_id = sessions.get(request.session_hash)
        try:
            for kind, data in client.stream(message, session_id):
                if kind == "delta":
                    text += data
                    yield text
                elif kind == "reset":
                    # The model failed mid-answer: its start is withdrawn, the KB's answer follows.
                    text = ""
                elif kind == "answer":
                    with sessions_lock:
                        sessions[request.session_hash] = data["session_id"]
                    # The conversation id rides on the message, so a like on it, in any turn,
                    # finds its conversation without any state kept here.
                    yield {
                        "role": "assistant",
                        "content": data["answer"] + details(data),
                        "metadata": {"id": data["conversation_id"]},
                    }
        except ApiError as exc:
            yield f"No answer: {exc}"

    def vote(history: list[dict], like: gr.LikeData) -> None:
        metadata = history[like.index].get("metadata") or {}
        # A thumb taken back arrives as neither True nor False: there is no vote to send.
        if "id" not in metadata or not isinstance(like.liked, bool):
            return
        try:
            reply = client.feedback(str(metadata["id"]), 1 if like.liked else -1)
        except ApiError as exc:
            raise gr.Error(f"Feedback not saved: {exc}") from exc
        gr.Info(feedback_thanks(reply))

    # The default theme fetches its font from Google: offline, or under a strict policy, the
    # title came out in two fonts. The system's own fonts need nothing from another host.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )
    with gr.Blocks(title="Media Support Assistant", analytics_enabled=False, theme=theme) as demo:
        chatbot = gr.Chatbot(label="Support", height="72vh", feedback_options=("Like", "Dislike"))
        gr.ChatInterface(
            respond,
            chatbot=chatbot,
            title="Media Support Assistant",
            description=f"Answers from the support knowledge base, by the API at {client.url}.",
            examples=EXAMPLES,
            api_name="chat",
            analytics_enabled=False,
        )
        chatbot.like(vote, inputs=[chatbot], outputs=None, api_name="feedback")
    return demo


def main() -> None:
    build(AssistantClient()).launch()


if __name__ == "__main__":
    main()

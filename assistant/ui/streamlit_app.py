"""The Streamlit front end: a chat page and a monitoring page, both over the HTTP API.

`make streamlit` runs it; ASSISTANT_URL names the API (default http://localhost:5000).
"""

from pathlib import Path

import streamlit as st

from assistant.client import ApiError, AssistantClient

PAGES = Path(__file__).resolve().parent / "pages"

st.set_page_config(page_title="Media Support Assistant", page_icon="🎬", layout="wide")
# One client per browser session: its connection pool is reused across reruns.
client = st.session_state.setdefault("client", AssistantClient())
page = st.navigation(
    [
        st.Page(PAGES / "chat.py", title="Chat", icon=":material/forum:", default=True),
        st.Page(PAGES / "monitoring.py", title="Monitoring", icon=":material/monitoring:"),
    ]
)
with st.sidebar:
    st.caption(f"API: {client.url}")
    try:
        health = client.health()
    except ApiError as exc:
        st.error(str(exc))
    else:
        kb = health["knowledge_base"]
        st.caption(
            f"{health['provider']}:{health['model']} · {kb['documents']} documents ({kb['source']})"
        )
page.run()

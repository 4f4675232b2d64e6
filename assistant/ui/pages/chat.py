"""Chat page: questions go through POST /question (streamed when the API can), thumbs through
POST /feedback. The API's session id is kept, so a conversation stays one session."""

import streamlit as st

from assistant.client import ApiError, answer_facts, feedback_thanks

client = st.session_state.client
history = st.session_state.setdefault("history", [])


def send_vote(conversation_id: str) -> None:
    # st.feedback("thumbs") gives 1 for up, 0 for down and None when the vote is taken back.
    choice = st.session_state[f"vote-{conversation_id}"]
    if choice is None:
        return
    try:
        reply = client.feedback(conversation_id, 1 if choice == 1 else -1)
    except ApiError as exc:
        note = f"Feedback not saved: {exc}"
        st.toast(note, icon=":material/error:")
    else:
        note = feedback_thanks(reply)
        st.toast(note, icon=":material/check_circle:")
    # Also kept under the thumbs: a toast is gone after a few seconds, or missed.
    st.session_state[f"vote-note-{conversation_id}"] = note


def show_details(body: dict) -> None:
    st.caption(" · ".join([*answer_facts(body), f"{body['response_time']:.2f} s"]))
    if body["sources"]:
        with st.expander(f"Sources ({len(body['sources'])})"):
            for source in body["sources"]:
                st.markdown(
                    f"- **{source['question']}**  \n"
                    f"  `{source['intent']}` · score {source['score']:.2f} · id `{source['id']}`"
                )
    conversation_id = body["conversation_id"]
    st.feedback(
        "thumbs", key=f"vote-{conversation_id}", on_change=send_vote, args=(conversation_id,)
    )
    if note := st.session_state.get(f"vote-note-{conversation_id}"):
        st.caption(note)


st.title("Media Support Assistant")
if st.sidebar.button("New conversation", icon=":material/add_comment:"):
    history.clear()
    st.session_state.pop("session_id", None)

for message in history:
    with st.chat_message(message["role"]):
        st.markdown(message["content"])
        if "body" in message:
            show_details(message["body"])

if question := st.chat_input("Ask about plans, billing, devices, subtitles..."):
    history.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        answer: dict = {}

        def deltas():
            for kind, data in client.stream(question, st.session_state.get("session_id")):
                if kind == "delta":
                    yield data
                elif kind == "answer":
                    answer.update(data)

        try:
            st.write_stream(deltas())
        except ApiError as exc:
            history.append({"role": "assistant", "content": f":material/error: No answer: {exc}"})
        else:
            st.session_state.session_id = answer["session_id"]
            history.append({"role": "assistant", "content": answer["answer"], "body": answer})
    # Draw the new exchange from the history, with its sources and thumbs, like the others.
    st.rerun()

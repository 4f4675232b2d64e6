"""Front ends over the HTTP API: Streamlit (`streamlit_app.py`) and Gradio (`gradio_app.py`).

They talk to the API only through `assistant.client`, so every exchange they carry is logged,
judged and counted like any other.
"""

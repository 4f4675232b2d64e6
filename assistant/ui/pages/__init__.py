"""Streamlit pages run by streamlit_app.py's navigation: chat and monitoring."""

"""End-to-end tests: the real dashboard (``streamlit run app.py``) driven in headless Chromium."""

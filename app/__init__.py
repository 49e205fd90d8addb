"""The Streamlit web app: page registration (main.py) and the UI-side services the thin pages call."""

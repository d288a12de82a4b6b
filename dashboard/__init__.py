"""Streamlit glue of the cnnvis dashboard: session state, cached engines, shared widgets.

Pages import from here and from :mod:`cnnvis_core`; no torch maths lives in this package.
"""

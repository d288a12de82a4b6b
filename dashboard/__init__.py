"""Streamlit glue of the cnnvis dashboard: one module per page, beside that page.

- ``pages/x.py`` holds the page's widgets and layout only (``app.py`` likewise for the frame: the
  sidebar and the page list); ``pages/`` holds nothing but pages, Streamlit lists that folder.
- ``dashboard/x.py`` holds the cached calls and the figures of ``pages/x.py``: no widgets, nothing
  drawn but a cached call's spinner (or progress bar), and no torch maths (that is
  :mod:`cnnvis_core`'s). The caches take the engine and the chosen image themselves and hash them by
  their keys: ``hash_funcs=state.HASH_FUNCS``.
- Shared by every page: :mod:`dashboard.state` (the chosen model and image, and ``require_frame``,
  ``require_engine_and_image``, ``show_error``, which pages call) and :mod:`dashboard.widget_state`
  (widget values kept across views and ranges).
- A new page: ``pages/x.py``, ``dashboard/x.py``, and one ``st.Page("pages/x.py", …)`` line in
  ``app.py``.
"""

"""A dashboard session over Streamlit's own wire protocol: what a browser sends, without a browser.

The load bench's browser sessions share the server's cores with their Chromium tabs, which use most
of the CPU (the tabs of a real class run on the students' machines). :class:`WireSession` is a
session as the server sees it, at the cost of a few protobuf messages on the client side:

- **open**: ``GET /`` and the page's scripts and style sheets (what a new browser fetches), the
  health check that sets the XSRF cookie, the websocket ``/_stcore/stream`` (the token in the
  subprotocol, as the browser does), a first run, then every ``/media/`` file that run shows;
- **rerun**: a ``BackMsg.rerun_script`` carrying the widget values set so far (a widget the
  session never set takes its default on the server, as in a browser that never touched it), then
  the run's end (``script_finished``) and the media of the run;
- **upload**: ``file_urls_request`` → ``file_urls_response``, a multipart ``PUT`` of the file to its
  upload URL, then a rerun with the file uploader's state naming the file;
- fragments that ask to be rerun every so often (``auto_rerun``) are rerun on that schedule, so a
  page that polls a job keeps it alive as an open tab does.

Elements of the last run are kept by type and label (``session.widget("selectbox", "Method")``);
exception boxes and failed media fetches are counted.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import FileUploaderState, FileURLsRequest, UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates

XSRF_COOKIE = "_streamlit_xsrf"
#: ``script_finished`` statuses that end a whole run (not a fragment's, not one cut short by a rerun)
RUN_OVER = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR}
WIDGETS = ("selectbox", "radio", "slider", "number_input", "checkbox", "button", "file_uploader",
           "text_input", "multiselect", "segmented_control")
_ASSET = re.compile(r'(?:src|href)="\.?/?(static/[^"]+)"')


class WireError(RuntimeError):
    """The server did not answer as a Streamlit server does (closed socket, no run end…)."""


@dataclass
class Counts:
    """What went wrong over a session's life: exception boxes shown, media fetches failed."""

    exceptions: int = 0
    failed_media: int = 0


@dataclass
class Run:
    """What one run showed: elements by ``(type, label)``, the text of its markdown and captions."""

    elements: dict[tuple[str, str], Any] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    media: list[str] = field(default_factory=list)
    exceptions: int = 0


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 120) -> tuple[bytes, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return answer.read(), answer.headers


def _put_multipart(url: str, name: str, data: bytes, headers: dict[str, str]) -> int:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="PUT", headers={
        **headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=300) as answer:
        return answer.status


class WireSession:
    """One dashboard session over the websocket (see the module docstring)."""

    def __init__(self, url: str, counts: Counts | None = None) -> None:
        self.url = url.rstrip("/")
        self.counts = counts or Counts()
        self.session_id = ""
        self.pages: dict[str, str] = {}  # page name → page script hash
        self.page_hash = ""
        self.run = Run()
        self._states: dict[str, WidgetState] = {}
        self._socket: Any = None
        self._reader: asyncio.Task | None = None
        self._run_over: asyncio.Event = asyncio.Event()
        self._files: dict[str, asyncio.Future] = {}
        self._fragments: dict[str, asyncio.Task] = {}
        self._fetched: set[str] = set()
        self._cookie = ""
        self._xsrf = ""
        self._ids = itertools.count()

    # ------------------------------------------------------------------ actions
    async def open(self) -> float:
        """Seconds from the first request until the first run is over and its media fetched."""
        started = time.perf_counter()
        html, _ = await asyncio.to_thread(_get, self.url + "/")
        await asyncio.gather(*(asyncio.to_thread(_get, f"{self.url}/{path}")
                               for path in dict.fromkeys(_ASSET.findall(html.decode()))))
        _, headers = await asyncio.to_thread(_get, self.url + "/_stcore/health")  # sets the XSRF cookie
        for cookie in headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            if name == XSRF_COOKIE:
                self._xsrf = rest.split(";")[0]
                self._cookie = f"{XSRF_COOKIE}={self._xsrf}"
        ws_url = "ws" + self.url.removeprefix("http") + "/_stcore/stream"
        self._socket = await websockets.connect(
            ws_url, subprotocols=["streamlit", self._xsrf or "x"], max_size=None,
            additional_headers={"Origin": self.url, "Cookie": self._cookie}, open_timeout=300)
        self._reader = asyncio.create_task(self._read())
        await self._rerun()
        return time.perf_counter() - started

    async def rerun(self) -> float:
        """Seconds for a run with the widget values set so far (none new: a plain rerun)."""
        started = time.perf_counter()
        await self._rerun()
        return time.perf_counter() - started

    async def set(self, kind: str, label: str, value: Any) -> float:
        """Seconds for the run that setting the widget ``(kind, label)`` to ``value`` triggers."""
        element = self.widget(kind, label)
        self._states[element.id] = _widget_state(kind, element.id, value)
        started = time.perf_counter()
        await self._rerun()
        if kind == "button":
            self._states.pop(element.id, None)  # a trigger fires once
        return time.perf_counter() - started

    async def go_to(self, page: str) -> float:
        """Seconds for the run of another page (by its title in the navigation)."""
        self.page_hash = self.pages[page]
        started = time.perf_counter()
        await self._rerun()
        return time.perf_counter() - started

    async def upload(self, label: str, name: str, data: bytes) -> float | None:
        """Seconds until a run shows ``name`` (in any text) after uploading it in the file
        uploader ``label``; None when the upload was refused or no run showed the name."""
        element = self.widget("file_uploader", label)
        started = time.perf_counter()
        request_id = str(next(self._ids))
        answer = asyncio.get_running_loop().create_future()
        self._files[request_id] = answer
        await self._send(BackMsg(file_urls_request=FileURLsRequest(
            request_id=request_id, file_names=[name], session_id=self.session_id)))
        urls = (await asyncio.wait_for(answer, 120)).file_urls[0]
        upload_url = urls.upload_url if urls.upload_url.startswith("http") else self.url + urls.upload_url
        try:
            await asyncio.to_thread(_put_multipart, upload_url, name, data,
                                    {"X-Xsrftoken": self._xsrf, "Cookie": self._cookie, "Origin": self.url})
        except (urllib.error.URLError, OSError):
            return None
        info = UploadedFileInfo(name=name, size=len(data), file_id=urls.file_id, file_urls=urls)
        self._states[element.id] = WidgetState(id=element.id, file_uploader_state_value=FileUploaderState(
            uploaded_file_info=[info]))
        await self._rerun()
        if not any(name in text.replace("\\", "") for text in self.run.texts):  # markdown-escaped
            return None
        return time.perf_counter() - started

    def widget(self, kind: str, label: str) -> Any:
        """The element of the last run of type ``kind`` whose label is ``label`` (or the one label
        that starts with it)."""
        if (kind, label) in self.run.elements:
            return self.run.elements[(kind, label)]
        found = [e for (k, lab), e in self.run.elements.items() if k == kind and lab.startswith(label)]
        if len(found) == 1:
            return found[0]
        shown = sorted(f"{k}:{lab}" for k, lab in self.run.elements)
        raise WireError(f"no single {kind} {label!r} in the last run; it showed {shown}")

    async def close(self) -> None:
        for task in self._fragments.values():
            task.cancel()
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            self._reader.cancel()

    # ------------------------------------------------------------------ the wire
    async def _send(self, message: BackMsg) -> None:
        await self._socket.send(message.SerializeToString())

    async def _rerun(self, fragment_id: str = "", timeout: float = 600) -> None:
        """Send a rerun and, for a whole run, wait for its end and fetch its new media."""
        state = ClientState(query_string="", page_script_hash=self.page_hash, fragment_id=fragment_id,
                            is_auto_rerun=bool(fragment_id),
                            widget_states=WidgetStates(widgets=list(self._states.values())))
        if fragment_id:
            await self._send(BackMsg(rerun_script=state))
            return
        self._run_over.clear()
        self.run = Run()
        await self._send(BackMsg(rerun_script=state))
        try:
            await asyncio.wait_for(self._run_over.wait(), timeout)
        except asyncio.TimeoutError:
            raise WireError(f"no end of run within {timeout:.0f} s") from None
        await self._fetch_media()

    async def _fetch_media(self) -> None:
        new = [u for u in dict.fromkeys(self.run.media) if u not in self._fetched]
        self._fetched.update(new)

        async def fetch(url: str) -> None:
            try:
                await asyncio.to_thread(_get, url if url.startswith("http") else self.url + url)
            except (urllib.error.URLError, OSError):
                self.counts.failed_media += 1

        await asyncio.gather(*(fetch(u) for u in new))

    async def _read(self) -> None:
        try:
            async for frame in self._socket:
                message = ForwardMsg()
                message.ParseFromString(frame)
                self._handle(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self._run_over.set()  # nobody waits for a run of a closed socket

    def _handle(self, message: ForwardMsg) -> None:
        kind = message.WhichOneof("type")
        if kind == "new_session":
            self.session_id = message.new_session.initialize.session_id
            self._pages(message.new_session.app_pages)
        elif kind == "navigation":
            self._pages(message.navigation.app_pages)
            self.page_hash = self.page_hash or message.navigation.page_script_hash
        elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
            self._element(message.delta.new_element)
        elif kind == "script_finished" and message.script_finished in RUN_OVER:
            self._run_over.set()
        elif kind == "file_urls_response":
            answer = self._files.pop(message.file_urls_response.response_id, None)
            if answer is not None and not answer.done():
                answer.set_result(message.file_urls_response)
        elif kind == "auto_rerun":
            self._poll(message.auto_rerun.fragment_id, message.auto_rerun.interval)

    def _pages(self, pages: Any) -> None:
        for page in pages:
            self.pages[page.page_name] = page.page_script_hash

    def _element(self, element: Any) -> None:
        kind = element.WhichOneof("type")
        if kind in WIDGETS:
            widget = getattr(element, kind)
            self.run.elements[(kind, widget.label)] = widget
        elif kind == "exception":
            self.run.exceptions += 1
            self.counts.exceptions += 1
        elif kind == "imgs":
            self.run.media += [image.url for image in element.imgs.imgs if "/media/" in image.url]
        elif kind in ("markdown", "alert", "text", "heading"):
            self.run.texts.append(getattr(element, kind).body)

    def _poll(self, fragment_id: str, interval: float) -> None:
        """Rerun the fragment every ``interval`` s, as the browser does, until the session closes."""
        if fragment_id in self._fragments:
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                await self._rerun(fragment_id)

        self._fragments[fragment_id] = asyncio.create_task(loop())


def _widget_state(kind: str, widget_id: str, value: Any) -> WidgetState:
    """The widget state a browser sends for ``value`` in a widget of type ``kind``."""
    if kind == "button":
        return WidgetState(id=widget_id, trigger_value=True)
    if kind == "checkbox":
        return WidgetState(id=widget_id, bool_value=bool(value))
    if kind == "number_input":
        return WidgetState(id=widget_id, double_value=float(value))
    if kind == "slider":
        values = value if isinstance(value, (list, tuple)) else [value]
        return WidgetState(id=widget_id, double_array_value={"data": [float(v) for v in values]})
    if kind in ("multiselect", "segmented_control"):
        return WidgetState(id=widget_id, string_array_value={"data": [str(v) for v in value]})
    return WidgetState(id=widget_id, string_value=str(value))  # selectbox, radio, text_input

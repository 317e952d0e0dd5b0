"""The mail viewer of `make run`: the .eml files of the capture folder in a browser (read-only, 127.0.0.1 only).

    /                     every captured mail, newest first (also those of earlier runs)
    /mail/<file>          its headers, its text part and its HTML part (in a sandboxed frame), links to the rest
    /mail/<file>/html     the HTML part alone, served with `Content-Security-Policy: sandbox` (no scripts, no forms)
    /mail/<file>/text     the text part, /mail/<file>/headers the header block, /mail/<file>/raw the whole file
    /api/mails            the list as JSON (number, file, date, from, to, subject)

Invariants: everything taken from a mail is HTML-escaped on the viewer's own pages; only files that are in the
folder's listing are ever opened (a name is looked up, never joined to a path); nothing is written.
"""

from __future__ import annotations

import email
import email.policy
import html
import pathlib
from email.message import EmailMessage

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

PARTS = ("html", "text", "headers", "raw")
# The mail's own HTML may be hostile: no scripts, no plugins, no forms, no fetches but images and inline styles.
HTML_PART_POLICY = "sandbox; default-src 'none'; img-src http: https: data:; style-src 'unsafe-inline'"
PAGE_STYLE = ("body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}"
              "td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}"
              "pre{white-space:pre-wrap;background:#f6f6f6;padding:1em}iframe{width:100%;height:70vh;"
              "border:1px solid #ccc}nav a{margin-right:1em}")


def mail_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The captured mails, newest (highest number) first."""
    return sorted(folder.glob("*.eml"), key=lambda path: path.name, reverse=True)


def _read(path: pathlib.Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _part(message: EmailMessage, subtype: str) -> str | None:
    body = message.get_body(preferencelist=(subtype,))
    if body is None or body.get_content_subtype() != subtype:
        return None
    return str(body.get_content()).replace("\r\n", "\n")  # as received over SMTP: CRLF line ends


def _summary(path: pathlib.Path) -> dict[str, str]:
    message = _read(path)
    return {"file": path.name, "number": path.name.split("-", 1)[0], "date": str(message.get("Date", "")),
            "from": str(message.get("From", "")), "to": str(message.get("To", "")),
            "subject": str(message.get("Subject", ""))}


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                        f"<style>{PAGE_STYLE}</style></head><body>{body}</body></html>")


def create_app(folder: pathlib.Path) -> Starlette:
    def lookup(request: Request) -> pathlib.Path | None:
        name = request.path_params["name"]
        return next((path for path in mail_files(folder) if path.name == name), None)

    async def index(request: Request) -> Response:
        rows = "".join(
            f"<tr><td>{html.escape(m['number'])}</td><td>{html.escape(m['date'])}</td>"
            f"<td>{html.escape(m['from'])}</td><td>{html.escape(m['to'])}</td>"
            f"<td><a href='/mail/{html.escape(m['file'], quote=True)}'>{html.escape(m['subject']) or '(no subject)'}"
            "</a></td></tr>" for m in map(_summary, mail_files(folder)))
        return _page("Captured mail", f"<h1>Captured mail</h1><p>{html.escape(str(folder))}/</p><table><tr><th>#</th>"
                     f"<th>date</th><th>from</th><th>to</th><th>subject</th></tr>{rows}</table>"
                     + ("" if rows else "<p>No mail yet.</p>"))

    async def api_list(request: Request) -> Response:
        return JSONResponse([_summary(path) for path in mail_files(folder)])

    async def show(request: Request) -> Response:
        path = lookup(request)
        if path is None:
            return PlainTextResponse("no such mail", status_code=404)
        message = _read(path)
        base = f"/mail/{html.escape(path.name, quote=True)}"
        headers = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                          for k, v in message.items())
        text = _part(message, "plain")
        frame = (f"<h2>HTML part</h2><iframe sandbox src='{base}/html'></iframe>"
                 if _part(message, "html") is not None else "<p>No HTML part.</p>")
        return _page(str(message.get("Subject", path.name)),
                     f"<nav><a href='/'>all mail</a><a href='{base}/html'>HTML</a><a href='{base}/text'>text</a>"
                     f"<a href='{base}/headers'>headers</a><a href='{base}/raw'>raw</a></nav>"
                     f"<h1>{html.escape(str(message.get('Subject', '')))}</h1><table>{headers}</table>{frame}"
                     "<h2>Text part</h2>" + (f"<pre>{html.escape(text)}</pre>" if text is not None else "<p>None.</p>"))

    async def part(request: Request) -> Response:
        path = lookup(request)
        if path is None:
            return PlainTextResponse("no such mail", status_code=404)
        kind = request.path_params["kind"]
        if kind not in PARTS:
            return PlainTextResponse("no such view: html, text, headers or raw", status_code=404)
        if kind == "raw":
            return PlainTextResponse(path.read_text("utf-8", errors="replace"))
        message = _read(path)
        if kind == "headers":
            return PlainTextResponse("".join(f"{k}: {v}\n" for k, v in message.items()))
        content = _part(message, "html" if kind == "html" else "plain")
        if content is None:
            return PlainTextResponse(f"this mail has no {kind} part", status_code=404)
        if kind == "html":
            return HTMLResponse(content, headers={"Content-Security-Policy": HTML_PART_POLICY})
        return PlainTextResponse(content)

    return Starlette(routes=[
        Route("/", index), Route("/api/mails", api_list), Route("/mail/{name}", show),
        Route("/mail/{name}/{kind:str}", part),
    ])

"""`/v1/files`: the Files API (reference §2.8), and the harness's internal file routes.

Files are kept per tenant namespace in the gateway's file store (`filestore.FileStore`): a
file id of another namespace is not found. Uploads are streamed to disk and refused with
413 as soon as they pass the limit, never held in memory.

The internal routes (`/internal/v1/sessions/{session_id}/...`) serve harness workers, which
hold no API key: a worker authenticates with its session's random `gateway_token` (from the
session's settings in Redis, compared in constant time) and names the session's namespace
in `x-paddock-namespace`. It may read only the files mounted into that session and write
only that session's outputs (docs/gateway.md, "Files").
"""

from __future__ import annotations

import hmac
import mimetypes
import posixpath
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from paddock.eventlog import SessionSettings
from paddock.gateway.auth import valid_namespace
from paddock.gateway.common import Gateway, gateway, namespace
from paddock.gateway.errors import ApiError, invalid, not_found
from paddock.gateway.filestore import FileStore, FileTooLarge, StoredFile, Upload, new_metadata
from paddock.gateway.pages import limit_param, list_param, paginate
from paddock.gateway.views import FileDeleted, FileMetadata, FilePage, FileScope, respond

routes = web.RouteTableDef()

INTERNAL_PREFIX = "/internal/"
"""Routes the API's authentication leaves alone: they check a session's token instead."""
_CHUNK = 256 * 1024
_FORM_OVERHEAD = 64 * 1024
"""Room for the multipart framing and small fields around the file's bytes."""
_EXPIRY_RANGE = (3600, 7_776_000)


def file_store(gw: Gateway) -> FileStore:
    directory = gw.config.files_dir
    if directory is None:
        raise not_found("the Files API is not enabled: the gateway has no file store")
    return FileStore(directory, gw.config.files_max_bytes)


def file_view(stored: StoredFile) -> FileMetadata:
    scope = FileScope(id=stored.session_id) if stored.session_id else None
    return FileMetadata(
        id=stored.id,
        filename=stored.filename,
        mime_type=stored.mime_type,
        size_bytes=stored.size_bytes,
        created_at=stored.created_at,
        downloadable=True,
        expires_at=stored.expires_at,
        scope=scope,
    )


async def find_file(gw: Gateway, tenant: str, file_id: str) -> StoredFile:
    """The tenant's file; 404 for any other id (another tenant's included)."""
    stored = await file_store(gw).get(tenant, file_id)
    if stored is None:
        raise not_found(f"file {file_id} not found", error_code="file_not_found")
    return stored


def _too_large(limit: int) -> ApiError:
    # Closing: the rest of the body is not read.
    return ApiError(413, f"the file exceeds the limit of {limit} bytes", close=True)


def _filename(raw: str | None, mime_type: str) -> str:
    name = posixpath.basename((raw or "").replace("\\", "/")).strip()
    if name:
        return name[:255]
    return "unnamed" + (mimetypes.guess_extension(mime_type) or "")


def _mime_type(part: BodyPartReader) -> str:
    given = part.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if given and given != "application/octet-stream":
        return given
    guessed, _ = mimetypes.guess_type(part.filename or "")
    return guessed or given or "application/octet-stream"


async def _expiry(part: BodyPartReader) -> int:
    text = (await part.read_chunk(64)).decode(errors="replace").strip()
    try:
        seconds = int(text)
    except ValueError:
        raise invalid(f"expires_in_seconds: not an integer: {text[:20]!r}") from None
    low, high = _EXPIRY_RANGE
    if not low <= seconds <= high:
        raise invalid(f"expires_in_seconds: must be between {low} and {high}")
    return seconds


async def _receive(upload: Upload, chunks: Any) -> None:
    """Stream ``chunks`` (an async iterator of bytes) into ``upload``."""
    try:
        async for chunk in chunks:
            await upload.write(chunk)
    except FileTooLarge as exc:
        raise _too_large(exc.limit) from None
    except RequestPayloadError as exc:
        raise ApiError(400, f"request body cannot be read: {exc}", close=True) from None


def _first_line(exc: Exception) -> str:
    """The complaint without the bytes a parser quotes."""
    text = str(getattr(exc, "message", "") or exc).strip().splitlines() or ["malformed"]
    return text[0].partition(": b'")[0][:200]


async def _part_chunks(part: BodyPartReader) -> Any:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


@routes.post("/v1/files")
async def upload_file(request: web.Request) -> web.Response:
    store, tenant = file_store(gateway(request)), namespace(request)
    if request.content_type != "multipart/form-data":
        raise invalid("upload the file as multipart/form-data with a `file` part")
    length = request.content_length
    if length is not None and length > store.max_bytes + _FORM_OVERHEAD:
        raise _too_large(store.max_bytes)
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError) as exc:  # no boundary
        raise invalid(f"the multipart body cannot be read: {exc}") from None
    upload: Upload | None = None
    filename, mime_type, expires = "", "application/octet-stream", None
    try:
        try:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise invalid("nested multipart bodies are not accepted")
                if part.name == "file" and upload is None:
                    mime_type = _mime_type(part)
                    filename = _filename(part.filename, mime_type)
                    upload = await store.receive(tenant)
                    await _receive(upload, _part_chunks(part))
                elif part.name == "expires_in_seconds":
                    expires = await _expiry(part)
                else:
                    raise invalid(f"unexpected form field {part.name!r}: send `file`")
        except (HttpProcessingError, ValueError) as exc:
            # Broken framing: a part's headers, a missing boundary, a body that ends early.
            message = _first_line(exc)
            raise ApiError(
                400, f"the multipart body cannot be read: {message}", close=True
            ) from None
        if upload is None:
            raise invalid("file: the form has no `file` part")
        stored = await upload.commit(
            new_metadata(upload, filename=filename, mime_type=mime_type, expires_in_s=expires)
        )
    except BaseException:
        if upload is not None:
            await upload.discard()
        raise
    return respond(file_view(stored))


@routes.get("/v1/files")
async def list_files(request: web.Request) -> web.Response:
    query = request.query
    ids = set(list_param(query, "ids"))
    if ids and ("page" in query or "limit" in query):
        raise invalid("ids cannot be combined with page or limit")
    limit = limit_param(query, default=20, maximum=1000)
    files = await file_store(gateway(request)).list(namespace(request))
    scope = query.get("scope_id")
    items = [
        stored
        for stored in files
        if (not ids or stored.id in ids) and (scope is None or stored.session_id == scope)
    ]
    if ids:
        items.sort(key=lambda stored: (stored.created_at, stored.id), reverse=True)
        return respond(FilePage(data=[file_view(stored) for stored in items], next_page=None))
    page = paginate(
        items,
        lambda stored: (stored.created_at, stored.id),
        limit=limit,
        order="desc",
        page=query.get("page"),
    )
    return respond(
        FilePage(data=[file_view(stored) for stored in page.data], next_page=page.next_page)
    )


@routes.get("/v1/files/{file_id}")
async def retrieve_file(request: web.Request) -> web.Response:
    stored = await find_file(gateway(request), namespace(request), request.match_info["file_id"])
    return respond(file_view(stored))


def _content(store: FileStore, tenant: str, stored: StoredFile) -> web.FileResponse:
    disposition = "attachment; filename*=UTF-8''" + quote(stored.filename, safe="")
    return web.FileResponse(
        store.content_path(tenant, stored.id),
        headers={"Content-Type": stored.mime_type, "Content-Disposition": disposition},
    )


@routes.get("/v1/files/{file_id}/content")
async def download_file(request: web.Request) -> web.StreamResponse:
    gw, tenant = gateway(request), namespace(request)
    stored = await find_file(gw, tenant, request.match_info["file_id"])
    return _content(file_store(gw), tenant, stored)


@routes.delete("/v1/files/{file_id}")
async def delete_file(request: web.Request) -> web.Response:
    gw, tenant, file_id = gateway(request), namespace(request), request.match_info["file_id"]
    if not await file_store(gw).delete(tenant, file_id):
        raise not_found(f"file {file_id} not found", error_code="file_not_found")
    return respond(FileDeleted(id=file_id))


# --- The harness's routes ---------------------------------------------------------------


async def _harness_session(request: web.Request) -> tuple[str, str, SessionSettings]:
    """(tenant, session id, settings) of a harness request, which must carry the session's
    token; 401 for anything else, saying nothing of whether the session exists."""
    tenant = request.headers.get("x-paddock-namespace", "").strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    session_id = request.match_info["session_id"]
    refused = ApiError(401, "invalid session token")
    if scheme.lower() != "bearer" or not token.strip() or not valid_namespace(tenant):
        raise refused
    settings = await gateway(request).state.tenant(tenant).settings(session_id)
    expected = (settings.gateway_token or "") if settings is not None else ""
    # Compared even without settings, so that timing says nothing either.
    matches = hmac.compare_digest(token.strip().encode(), (expected or "-").encode())
    if settings is None or not expected or not matches:
        raise refused
    return tenant, session_id, settings


@routes.get("/internal/v1/sessions/{session_id}/files/{file_id}")
async def harness_download(request: web.Request) -> web.StreamResponse:
    """A file mounted into the session, for its harness to copy into the sandbox."""
    tenant, session_id, settings = await _harness_session(request)
    file_id = request.match_info["file_id"]
    if file_id not in {f.file_id for f in settings.files if f.file_id}:
        raise not_found(f"file {file_id} is not mounted into session {session_id}")
    gw = gateway(request)
    return _content(file_store(gw), tenant, await find_file(gw, tenant, file_id))


@routes.put("/internal/v1/sessions/{session_id}/outputs/{path:.+}")
async def harness_output(request: web.Request) -> web.Response:
    """A file of the session's outputs directory (``path`` below it), kept as a file scoped
    to the session. A path keeps one file: new content replaces the previous file (a new
    id), the same content keeps it, so uploading again after a crash is harmless."""
    tenant, session_id, _ = await _harness_session(request)
    path = posixpath.normpath(request.match_info["path"])
    if path.startswith(("/", "..")) or path == ".":
        raise invalid(f"not a path below the outputs directory: {path!r}")
    store = file_store(gateway(request))
    upload = await store.receive(tenant)
    try:
        await _receive(upload, request.content.iter_chunked(_CHUNK))
        previous = [
            stored
            for stored in await store.list(tenant)
            if stored.session_id == session_id and stored.output_path == path
        ]
        same = next((p for p in previous if p.sha256 == upload.sha256), None)
        if same is not None:
            await upload.discard()
            return respond(file_view(same))
        guessed, _ = mimetypes.guess_type(path)
        metadata = new_metadata(
            upload,
            filename=posixpath.basename(path),
            mime_type=guessed or "application/octet-stream",
            session_id=session_id,
            output_path=path,
        )
        stored = await upload.commit(metadata)
    except BaseException:
        await upload.discard()
        raise
    for old in previous:
        await store.delete(tenant, old.id)
    return respond(file_view(stored))

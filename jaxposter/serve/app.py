"""The page and the JSON API of `--mode serve`, on Starlette, served by uvicorn.

  GET  /                           the page: drop posters, see ranked genres and Grad-CAM
  GET  /api/model                  genres, thresholds, the models served
  POST /api/predict                body: an image file's bytes -> genres, probabilities,
                                   thresholds (JSON)
  POST /api/saliency?genre=Drama   body: an image file's bytes -> the Grad-CAM overlay (PNG)

The body is the image itself (curl --data-binary @poster.jpg), read into memory up to a
byte cap and never written anywhere: nothing a client sends names a file on the server.
Bad input gets a 4xx and {"error": reason, "message": one line a person can act on}.
Decoding is bounded across requests by memory (serve/budget.py): an upload whose decoded
pixels do not fit beside those in flight is answered 503 {"error": "busy"} with Retry-After.
"""

import contextlib
import importlib.resources
import ipaddress
import socket
import time

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
import uvicorn

from jaxposter.data import images
from jaxposter.errors import UserError
from jaxposter.serve.budget import DecodeBudget
from jaxposter.serve.model import Model

MAX_UPLOAD = 20 << 20  # bytes; a Kaggle poster is about 30 KB
RETRY_AFTER = 1  # seconds, in a 503's Retry-After: a large decode takes about a second


class Refused(Exception):
  def __init__(self, status: int, error: str, message: str, headers: dict | None = None):
    super().__init__(message)
    self.status, self.error, self.message, self.headers = status, error, message, headers


def _refusal(request: Request, e: Refused) -> JSONResponse:
  return JSONResponse({"error": e.error, "message": e.message}, status_code=e.status,
                      headers=e.headers)


async def _upload(request: Request, cap: int) -> bytes:
  """The request body, refused past `cap` bytes without reading further."""
  kind = request.headers.get("content-type", "")
  if kind.startswith("multipart/"):
    raise Refused(415, "multipart", "send the image file itself as the request body "
                  "(curl --data-binary @poster.jpg), not a form")
  too_big = Refused(413, "too_large", f"the upload is over this server's cap of {cap:,} bytes")
  if request.headers.get("content-length", "").isdigit() and \
      int(request.headers["content-length"]) > cap:
    raise too_big
  data = bytearray()
  async for chunk in request.stream():
    data += chunk
    if len(data) > cap:
      raise too_big
  return bytes(data)


async def _run(fn, *args):
  """fn(*args) in a worker thread; a file that is no usable image is refused with its reason."""
  try:
    return await run_in_threadpool(fn, *args)
  except (images.BadImage, OSError) as e:  # OSError: what predict skips as "unreadable"
    reason = getattr(e, "reason", "unreadable")
    status = 413 if reason in ("too_large", "too_many_pixels") else 400
    with_detail = reason in ("too_large", "too_many_pixels", "unreadable")
    detail = f" ({getattr(e, 'detail', e)})" if with_detail else ""
    raise Refused(status, reason, images.readable(reason) + detail) from None


async def _decoded(budget: DecodeBudget, max_pixels: int, fn, data: bytes, *args):
  """`_run(fn, data, *args)` with its decoding's memory taken from `budget`, or a 503."""
  cost = await run_in_threadpool(images.decode_cost, data, max_pixels)
  with budget.admit(cost) as admitted:
    if not admitted:
      raise Refused(503, "busy", "the server is decoding other large images; try again in "
                    f"{RETRY_AFTER} s", headers={"Retry-After": str(RETRY_AFTER)})
    return await _run(fn, data, *args)


def create_app(model: Model, max_upload: int = MAX_UPLOAD,
               budget: DecodeBudget | None = None, lifespan=None) -> Starlette:
  """The routes over `model`; `budget`: the decoding memory shared by requests (default:
  serve/budget.py's DecodeBudget()); `lifespan`: Starlette's, run at startup and shutdown."""
  page = importlib.resources.files(__package__).joinpath("page.html").read_text("utf-8")
  budget = budget or DecodeBudget()

  async def index(request: Request):
    return HTMLResponse(page)

  async def describe(request: Request):
    return JSONResponse({**model.describe(), "max_upload_bytes": max_upload})

  async def predict(request: Request):
    data = await _upload(request, max_upload)
    return JSONResponse(await _decoded(budget, model.max_pixels, model.predict, data))

  async def saliency(request: Request):
    genre = request.query_params.get("genre", "")
    if genre not in model.genres:
      raise Refused(400, "unknown_genre", (f"unknown genre {genre!r}" if genre else
                                           "which genre? add ?genre=...") +
                    f"; this model knows: {', '.join(model.genres)}")
    data = await _upload(request, max_upload)
    png = await _decoded(budget, model.max_pixels, model.saliency_png, data, genre)
    return Response(png, media_type="image/png")

  return Starlette(routes=[
      Route("/", index), Route("/api/model", describe),
      Route("/api/predict", predict, methods=["POST"]),
      Route("/api/saliency", saliency, methods=["POST"]),
  ], exception_handlers={Refused: _refusal}, lifespan=lifespan)


def listen(host: str, port: int) -> socket.socket:
  """A socket bound to host:port (0: any free port), or one clear error."""
  if not 0 <= port <= 65535:
    raise UserError(f"--port {port}: choose a port in 0-65535 (0: any free one)")
  try:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a listener still fails
    sock.bind((host, port))
    sock.listen()  # from now on a client waits for the model instead of being refused
  except OSError as e:
    raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another "
                    "--port (or --host)") from None
  return sock


def serve(members: list, kind, sock: socket.socket) -> None:
  """Restored members -> compiled once -> served on `sock` until Ctrl-C, which uvicorn
  turns into a graceful stop and then raises (KeyboardInterrupt) for the caller."""
  started = time.perf_counter()
  model = Model(members, kind)
  model.warm_up()
  host, port = sock.getsockname()[:2]
  url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"

  @contextlib.asynccontextmanager
  async def announce(_):  # at uvicorn's startup, once its Ctrl-C handler is in place
    print(f"serving {len(members)} model{'s' * (len(members) > 1)} at {url} (compiled in "
          f"{time.perf_counter() - started:.1f} s; Ctrl-C stops)", flush=True)
    if not ipaddress.ip_address(host).is_loopback:
      print(f"note: --host {host} lets other machines reach the page; it has no login",
            flush=True)
    yield

  app = create_app(model, lifespan=announce)
  uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])

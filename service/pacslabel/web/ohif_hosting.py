"""Serves the prebuilt OHIF viewer (npm @ohif/app dist) same-origin under /ohif.

The dist is built with PUBLIC_URL=/ baked into index.html, seven webpack runtimes and the CSS; no runtime
setting moves the assets (see the OHIF integration notes, section 3). We therefore patch a copy once to
/ohif/ and serve that, with an SPA fallback for deep links and an app-config generated per user.

The same copy also gets one bug fix (`_SCRIPT_DIR_FALLBACK`): without it about one reload in four leaves OHIF
blank in the same window.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from pathlib import Path
from string import Template

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from pacslabel.errors import NotFound, Unauthorized
from pacslabel.settings import Settings
from pacslabel.users.models import Role
from pacslabel.web.deps import DbSession, current_user

logger = logging.getLogger(__name__)

OHIF_PREFIX = "/ohif"
DICOMWEB_ROOT = "/dicomweb"
_PATCH_MARK = ".pacslabel-patched"
_WEBPACK_PUBLIC_PATH = re.compile(r'__webpack_require__\.p = "/";')
# onnxruntime-web's emscripten loaders (chunk 7431, pulled in by @cornerstonejs/ai, which the cornerstone
# extension imports at start-up) find their own URL with
#     e = document.currentScript ? document.currentScript.src : void 0; typeof __filename<"u" && (e = e||__filename)
# OHIF's webpack build folded `typeof __filename < "u"` to `true` (node polyfill), so when the module is evaluated
# while no <script> is executing, `__filename` throws a ReferenceError, the extension import rejects and OHIF
# never mounts (blank page, no window.services). That happens when the last piece of the start-up
# `Promise.all([__webpack_require__.e(...)])` to arrive is a CSS chunk (its <link> load event resumes the
# await, currentScript = null) rather than a JS chunk (microtasks then run inside that script, currentScript set):
# on a reload the hashed JS chunks come from the memory cache and the unhashed CSS chunks are revalidated over
# the network, so the CSS often finishes last. Restoring the guard lets `e` stay undefined there, which is what
# the unbundled library does in a browser.
_SCRIPT_DIR_FALLBACK = re.compile(r"(?<=return)(\s+)true&&\(e=e\|\|__filename\)")
_SCRIPT_DIR_FALLBACK_FIXED = r'\1typeof __filename<"u"&&(e=e||__filename)'
# Part of the prepared copy's name: a new patch set yields a new copy instead of reusing an old one.
_PATCH_VERSION = "3"

router = APIRouter(include_in_schema=False)


def default_ohif_config_dir() -> Path:
    # service/pacslabel/web/ohif_hosting.py -> repository root / ohif-config
    return Path(__file__).resolve().parents[3] / "ohif-config"


def prepare_ohif_dist(source: Path, target_root: Path, prefix: str = OHIF_PREFIX) -> Path:
    """A copy of the dist with every absolute "/" asset path moved under `prefix`; done once per dist."""
    index = source / "index.html"
    if not index.is_file():
        raise NotFound(f"the OHIF viewer is not installed ({index} missing); run scripts/setup.sh")
    digest = hashlib.sha256(index.read_bytes() + prefix.encode() + _PATCH_VERSION.encode()).hexdigest()[:16]
    target = target_root / f"ohif-{digest}"
    if (target / _PATCH_MARK).exists():
        return target
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    base = prefix.rstrip("/") + "/"
    html = (tmp / "index.html").read_text()
    html = re.sub(r'(src|href|content)="/(?!/)', rf'\1="{base}', html)
    html = html.replace("window.PUBLIC_URL = '/'", f"window.PUBLIC_URL = '{base}'")
    (tmp / "index.html").write_text(html)
    script_dir_fixes = 0
    for script in tmp.glob("*.js"):
        text = script.read_text(errors="surrogateescape")
        patched = _WEBPACK_PUBLIC_PATH.sub(f'__webpack_require__.p = "{base}";', text)
        patched, fixes = _SCRIPT_DIR_FALLBACK.subn(_SCRIPT_DIR_FALLBACK_FIXED, patched)
        script_dir_fixes += fixes
        if patched != text:
            script.write_text(patched, errors="surrogateescape")
    if not script_dir_fixes:
        # A newer dist may have fixed it upstream; say so instead of failing (the reload test would show it).
        logger.warning("OHIF dist: no unguarded __filename fallback found to fix (onnxruntime-web changed?)")
    for css in tmp.glob("*.css"):
        css.write_text(css.read_text().replace("url(/", f"url({base}"))
    (tmp / _PATCH_MARK).write_text(digest)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    logger.info("prepared OHIF dist under %s", prefix)
    return target


def render_app_config(settings: Settings, role: str) -> str:
    template_dir = settings.ohif_config_dir or default_ohif_config_dir()
    template = Template((template_dir / "app-config.js.template").read_text())
    # Readers open studies only from their worklist; the study list would at best show them nothing.
    show_study_list = role == Role.ADMIN.value
    return template.substitute(ROUTER_BASENAME=OHIF_PREFIX, DICOMWEB_ROOT=DICOMWEB_ROOT,
                               SHOW_STUDY_LIST="true" if show_study_list else "false")


def _dist(request: Request) -> Path:
    dist = getattr(request.app.state, "ohif_dist", None)
    if dist is None:
        settings: Settings = request.app.state.settings
        dist = prepare_ohif_dist(settings.effective_ohif_dist_dir, settings.var_dir / "ohif-served")
        request.app.state.ohif_dist = dist
    return dist  # type: ignore[no-any-return]


@router.get(OHIF_PREFIX + "/app-config.js")
def ohif_app_config(request: Request, session: DbSession) -> Response:
    try:
        user = current_user(request, session)
    except Unauthorized:
        return Response("window.location = '/login';", media_type="application/javascript", status_code=401)
    body = render_app_config(request.app.state.settings, user.role)
    return Response(body, media_type="application/javascript", headers={"Cache-Control": "no-store"})


@router.get(OHIF_PREFIX + "/{path:path}")
def ohif_files(path: str, request: Request, session: DbSession) -> Response:
    dist = _dist(request)
    candidate = (dist / path).resolve()
    if path and candidate.is_file() and candidate.is_relative_to(dist.resolve()):
        # Hashed bundles never change; everything else is revalidated.
        cache = "public, max-age=31536000, immutable" if ".bundle." in candidate.name else "no-cache"
        return FileResponse(candidate, headers={"Cache-Control": cache})
    if "." in Path(path).name:
        raise NotFound(f"no such viewer file: {path}")
    # SPA fallback: deep links such as /ohif/segmentation?StudyInstanceUIDs=... get index.html, after login.
    try:
        current_user(request, session)
    except Unauthorized:
        return RedirectResponse("/login", status_code=303)
    return FileResponse(dist / "index.html", headers={"Cache-Control": "no-cache"})

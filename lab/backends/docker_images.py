"""Build (or reuse) the Docker backend's images, tagged by a hash of everything that goes in."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.backends.base import BackendError

DOCKER_DIR = Path(__file__).resolve().parents[1] / "docker"
PROJECT_ROOT = DOCKER_DIR.parents[1]
LOCAL_BASE = "sender-tls-lab/base:bookworm"
STOCK_BASE = "python:3.12-slim"
TARGETS = ("lab", "postfix", "exim", "resolver")
OPTIONAL = ("exim",)  # a failed build of these leaves them out; only their senders then fail
IMAGE_LABEL = "sender-tls-lab.image"
# Cyrus SASL's PLAIN/LOGIN mechanisms and saslpasswd2 for the lab's authenticated relay, plus
# what they need that the offline base lacks: downloaded on the (Debian 12) host like the wheels
RELAY_DEBS = ("libsasl2-modules", "sasl2-bin", "db-util", "db5.3-util", "lsb-base", "libldap-2.5-0")
# Debian 12's Exim 4.96 (GnuTLS) and what it needs that the offline base lacks (its DANE library,
# unbound's, libidn12, and a cron for exim4-base), downloaded on the host the same way
EXIM_DEBS = (
    "exim4-daemon-light", "exim4-base", "exim4-config", "libgnutls-dane0", "libunbound8",
    "libevent-2.1-7", "libidn12", "cron", "cron-daemon-common", "sensible-utils",
)  # fmt: skip
SCRIPT_DIRS = ("mta", "postfix", "exim")  # lab/docker/<dir>: the MTA containers' scripts
# Debian's unbound (the lab's validating resolver) and its libraries the offline base lacks
RESOLVER_DEBS = (
    "unbound", "libevent-2.1-7", "libnghttp2-14", "libprotobuf-c1", "libpython3.11", "lsb-base",
)  # fmt: skip


def choose_base(client: Any) -> str:
    """Return the base image: $LAB_BASE_IMAGE, else a local stock image, else the offline base."""
    explicit = os.environ.get("LAB_BASE_IMAGE")
    if explicit:
        return explicit
    if _image_exists(client, STOCK_BASE):
        return STOCK_BASE
    if _image_exists(client, LOCAL_BASE):
        return LOCAL_BASE
    raise BackendError(
        f"no base image: neither {STOCK_BASE} nor {LOCAL_BASE} is on this engine",
        f"`docker pull {STOCK_BASE}`, `make base-image` (offline), or set LAB_BASE_IMAGE",
    )


def _image_exists(client: Any, tag: str) -> bool:
    """Return True when the engine has an image with this tag."""
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def source_digest(base_id: str) -> str:
    """Return a short hash over the base image id and every file that goes into the images."""
    digest = hashlib.sha256(base_id.encode())
    files = [PROJECT_ROOT / "pyproject.toml", *sorted(DOCKER_DIR.glob("Dockerfile"))]
    for folder in SCRIPT_DIRS:
        files += sorted((DOCKER_DIR / folder).rglob("*"))
    for package in ("lab", "harness"):
        files += sorted((PROJECT_ROOT / package).rglob("*.py"))
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_images(client: Any, say: Callable[[str], None] = print) -> dict[str, str]:
    """Return {target: tag} for the lab images, building them only when their hash is new."""
    base = choose_base(client)
    if not _image_exists(client, base):
        say(f"base image {base} is not on this engine; Docker will pull it")
        client.images.pull(base)
    digest = source_digest(client.images.get(base).id)
    tags = {target: f"sender-tls-lab/{target}:{digest}" for target in TARGETS}
    missing = [t for t in TARGETS if not _image_exists(client, tags[t])]
    if not missing:
        return tags
    say(f"building images {', '.join(tags[t] for t in missing)} on {base} (cold start)")
    with tempfile.TemporaryDirectory(prefix="tlslab-image-") as context:
        _prepare_context(client, base, Path(context))
        for target in missing:
            try:
                _build(client, Path(context), base, target, tags[target])
            except BackendError as error:
                if target not in OPTIONAL:
                    raise
                say(f"image target {target} not built (its senders cannot start): {error}")
                del tags[target]
    # earlier builds whose tag moved on are dangling now; running containers keep theirs
    client.images.prune(filters={"dangling": True, "label": IMAGE_LABEL})
    return tags


def _prepare_context(client: Any, base: str, context: Path) -> None:
    """Fill a build context: Dockerfile, the MTA containers' scripts, wheels and Debian packages."""
    shutil.copy(DOCKER_DIR / "Dockerfile", context / "Dockerfile")
    for folder in SCRIPT_DIRS:
        (context / folder).mkdir()
        if (DOCKER_DIR / folder).is_dir():
            shutil.copytree(DOCKER_DIR / folder, context / folder, dirs_exist_ok=True)
    version = client.containers.run(
        base,
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        remove=True,
        network_mode="none",
    )
    python = version.decode().strip()
    result = subprocess.run(
        ["bash", str(DOCKER_DIR / "download-wheels.sh"), str(context / "wheels"), python],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BackendError(
            f"could not collect wheels for Python {python}: {result.stderr.strip()[-400:]}",
            "check that PyPI is reachable from this machine",
        )
    _download_debs(context / "debs", RELAY_DEBS)
    _download_debs(context / "resolver-debs", RESOLVER_DEBS)
    if base == LOCAL_BASE:  # no package index inside: the exim target needs these or fails
        _download_debs(context / "exim-debs", EXIM_DEBS)
    else:
        (context / "exim-debs").mkdir()


def _download_debs(folder: Path, packages: tuple[str, ...]) -> None:
    """Download `packages` with the host's apt (updating its lists once if needed), best effort.

    Without RELAY_DEBS the postfix image still builds; only the relay driver's lab relay cannot
    AUTH. Without EXIM_DEBS an offline base cannot build the exim image (its build says so).
    """
    folder.mkdir()
    if shutil.which("apt-get") is None:
        return
    command = ["apt-get", "download", *packages]
    for attempt in range(2):
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        if attempt == 0:
            subprocess.run(["apt-get", "update"], capture_output=True, check=False)
    for partial in folder.glob("*"):
        partial.unlink()


def _build(client: Any, context: Path, base: str, target: str, tag: str) -> None:
    """Build one target; offline bases build with no network at all."""
    import docker.errors

    network = "none" if base == LOCAL_BASE else None
    try:
        client.images.build(
            path=str(context),
            target=target,
            tag=tag,
            buildargs={"BASE_IMAGE": base},
            network_mode=network,
            labels={IMAGE_LABEL: target},
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as error:
        log = "".join(str(chunk.get("stream", "")) for chunk in error.build_log)[-800:]
        raise BackendError(f"building {tag} failed: {error}: {log}", "see the build log") from None

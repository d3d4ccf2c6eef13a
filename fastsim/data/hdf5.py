"""CaloChallenge HDF5 files: streamed reading, atomic writing, validation.

The CaloChallenge layout (https://calochallenge.github.io/homepage/) is one HDF5 file with

- ``incident_energies``: shape (N, 1), the incident particle energy in MeV;
- ``showers``: shape (N, n_voxels), the voxel energies in MeV, in the order of
  :class:`fastsim.geometry.Geometry`.

Files whose ``incident_energies`` is 1-D (N,) (some tools write that) are read as well; fastsim
always writes (N, 1). In memory, incident energies are float64 (N,) and showers float32 (N, V).

Reading never loads the showers unless asked (:meth:`CaloFile.read`): :meth:`CaloFile.iter_chunks`
streams row blocks, so files larger than memory work. Writing goes through :class:`ShowerWriter`,
which writes a temporary file next to the target and renames it only on a clean exit; its showers
are compressed chunk by chunk on every core (:class:`ChunkRowWriter`), into the chunks h5py
itself would store.

Validation rules (:func:`validate_calochallenge`), all evaluated in one streamed pass:

- structure: the file exists and is HDF5; both datasets exist and are numeric; ``showers`` is 2-D;
  ``incident_energies`` is (N, 1) or (N,); both have the same N; N > 0; the voxel count equals the
  geometry's (when a geometry is given).
- non-finite values: NaN/inf in either dataset are counted and reported.
- incident energies must be > 0 MeV and at most :data:`MAX_INCIDENT_MEV` (1e8 MeV = 100 TeV).
- voxel energies must be >= -:data:`NEGATIVE_TOLERANCE_MEV` (1e-3 MeV). Geant4 deposits are never
  negative, but files that went through float32 arithmetic (sums, subtractions, a generator's
  output) can carry rounding noise just below zero; a thousandth of an MeV is far below any
  voxel threshold used in practice (the CaloChallenge evaluation's lowest is about 15 keV), so
  that much is tolerated and anything more negative is an error. Training preparation clips the
  tolerated values to 0.
- units (MeV expected for both datasets). A GeV/MeV mix-up is flagged when either
  (a) more than :data:`UNIT_FRACTION` (10 %) of the showers with a valid incident energy deposit
  more than :data:`UNIT_RATIO` (1.5) × their incident energy (a calorimeter measures at most about
  the incident energy; incident energies in GeV with deposits in MeV give ratios near 1000), or
  (b) every incident energy is below 1 MeV (no CaloChallenge-like sample has sub-MeV primaries; this
  catches files written entirely in GeV for primaries below 1 GeV). A file written entirely in GeV
  with primaries above 1 GeV cannot be told apart from a low-energy MeV file and is not flagged.
  (c) the median deposited energy is below :data:`UNIT_LOW_RATIO` (0.2 %) of the incident energy
  (but not zero): deposits in GeV with incident energies in MeV, 1000× too small.
  ``check_units=False`` turns these heuristics off (files from a barely trained generator).
- a damaged file (corrupt or truncated compressed chunk) is reported as such; reading one raises
  :class:`InputFileError`, never a bare ``OSError``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import weakref
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from fastsim.errors import InputFileError
from fastsim.geometry import Geometry
from fastsim.outputs import check_target, discard, publish, temporary_path

#: Incident energies above this (MeV) are rejected as absurd: 100 TeV.
MAX_INCIDENT_MEV = 1e8
#: Voxel energies down to minus this (MeV) are tolerated as float rounding noise.
NEGATIVE_TOLERANCE_MEV = 1e-3
#: A shower "exceeds" its incident energy when E_dep > UNIT_RATIO × E_inc ...
UNIT_RATIO = 1.5
#: ... and a unit mix-up is reported when more than this fraction of showers do.
UNIT_FRACTION = 0.10
#: Incident energies all below this (MeV) look like GeV.
MIN_PLAUSIBLE_MAX_INCIDENT_MEV = 1.0
#: A median E_dep/E_inc below this looks like deposits in GeV with incident energies in MeV
#: (calorimeters see 1-100 % of the incident energy: GeV deposits give 1e-5 to 1e-3).
UNIT_LOW_RATIO = 2e-3

#: Rows read at a time by default, at most (dataset 1: 10 000 rows = 15 MB) ...
DEFAULT_CHUNK_SIZE = 10_000
#: ... and at most this many bytes of float32 showers (dataset 3, 40 500 voxels: 414 rows).
DEFAULT_CHUNK_BYTES = 64 << 20

_E_INC = "incident_energies"
_SHOWERS = "showers"
#: Optional per-event incidence angle (N, 1), written by ``fastsim simulate --angle`` (attribute ``units``).
_ANGLES = "incident_angles"
#: its public name, for writers of the dataset
ANGLES_DATASET = _ANGLES


def _as_e_inc(e_inc: Any) -> np.ndarray:
    """Incident energies as float64 (N,) from (N,) or (N, 1)."""
    arr = np.asarray(e_inc, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"incident energies must have shape (N,) or (N, 1), got {arr.shape}")
    return arr


def auto_chunk_size(n_voxels: int, chunk_size: int | None = None) -> int:
    """Rows per read: ``chunk_size`` if given, else DEFAULT_CHUNK_SIZE capped at DEFAULT_CHUNK_BYTES.

    The byte cap keeps memory flat for wide geometries, where 10 000 rows would be 1.6 GB.
    """
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    return max(1, min(DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_BYTES // (4 * max(1, int(n_voxels)))))


def _attr_value(value: Any) -> Any:
    """An HDF5-storable attribute value: scalars and strings as they are, the rest as JSON."""
    import json

    if isinstance(value, (str, bytes, int, float, bool, np.integer, np.floating, np.bool_)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "iufb":
        return value
    return json.dumps(value, sort_keys=True, default=str)


def decode_attrs(attrs: h5py.AttributeManager) -> dict[str, Any]:
    """HDF5 attributes as Python values (bytes decoded as UTF-8, numpy scalars unwrapped)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


# --------------------------------------------------------------------------- structure


@dataclass
class _Structure:
    """What the file's metadata says, before any value is read."""

    problems: list[str] = field(default_factory=list)
    n_showers: int = 0
    n_voxels: int = 0
    e_inc_2d: bool = True
    has_angles: bool = False


def _inspect(f: h5py.File, geometry: Geometry | None) -> _Structure:
    st = _Structure()
    dsets = {}
    for name in (_E_INC, _SHOWERS):
        if name not in f:
            st.problems.append(f"missing dataset {name!r}")
        elif not isinstance(f[name], h5py.Dataset):
            st.problems.append(f"{name!r} is not a dataset")
        elif f[name].dtype.kind not in "fiu":
            st.problems.append(f"dataset {name!r} is not numeric (dtype {f[name].dtype})")
        else:
            dsets[name] = f[name]
    sh, ei = dsets.get(_SHOWERS), dsets.get(_E_INC)
    if sh is not None:
        if sh.ndim != 2:
            st.problems.append(f"showers must be 2-D (N, n_voxels), got shape {sh.shape}")
        else:
            st.n_showers, st.n_voxels = int(sh.shape[0]), int(sh.shape[1])
            if geometry is not None and st.n_voxels != geometry.n_voxels:
                st.problems.append(
                    f"showers have {st.n_voxels} voxels but geometry {geometry.name!r} has {geometry.n_voxels}"
                )
    if ei is not None:
        if ei.ndim == 2 and ei.shape[1] == 1:
            st.e_inc_2d = True
        elif ei.ndim == 1:
            st.e_inc_2d = False
        else:
            st.problems.append(f"incident_energies must have shape (N, 1) or (N,), got {ei.shape}")
            ei = None
    if sh is not None and sh.ndim == 2 and ei is not None:
        if ei.shape[0] != sh.shape[0]:
            st.problems.append(f"incident_energies has {ei.shape[0]} rows but showers has {sh.shape[0]}")
        elif sh.shape[0] == 0:
            st.problems.append("file holds no showers (N = 0)")
    if _ANGLES in f:
        an = f[_ANGLES]
        if not isinstance(an, h5py.Dataset) or an.dtype.kind not in "fiu":
            st.problems.append(f"{_ANGLES!r} is not a numeric dataset")
        elif an.shape not in ((st.n_showers, 1), (st.n_showers,)):
            st.problems.append(f"{_ANGLES} must have shape ({st.n_showers}, 1) like the showers, got {an.shape}")
        else:
            st.has_angles = True
    return st


def open_h5(path: str) -> h5py.File:
    """Open an HDF5 file for reading, or raise :class:`InputFileError` saying why not."""
    if not os.path.exists(path):
        raise InputFileError(path, "file not found")
    if os.path.isdir(path):
        raise InputFileError(path, "is a directory, not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise InputFileError(path, f"not a readable HDF5 file ({err})") from None


# --------------------------------------------------------------------------- reading


def _read_rows(
    path: str, e_ds: h5py.Dataset, s_ds: h5py.Dataset, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows start:stop; a damaged file (truncated, corrupt compressed chunk) raises InputFileError."""
    try:
        e = _as_e_inc(e_ds[start:stop])
        s = np.asarray(s_ds[start:stop], dtype=np.float32)
    except OSError as err:
        raise InputFileError(path, f"cannot read rows {start}:{stop}, file damaged? ({err})") from None
    return e, s


class CaloFile:
    """An open CaloChallenge file; use :func:`open_calochallenge`.

    Opening checks the structure (datasets, shapes, N, voxel count against ``geometry``) and
    raises :class:`InputFileError` on any structural problem; the values are checked by
    :func:`validate_calochallenge`, which reads them all.

    Attributes:
        path: the file.
        n_showers: N.
        n_voxels: V.
        attrs: the file's attributes (bytes decoded, numpy scalars as Python scalars).
        has_angles: the file has the optional ``incident_angles`` dataset (:meth:`incident_angles`).
    """

    def __init__(self, path: str | os.PathLike, geometry: Geometry | str | None = None) -> None:
        self.path = os.fspath(path)
        geo = Geometry.resolve(geometry) if geometry is not None else None
        self._f = open_h5(self.path)
        try:
            st = _inspect(self._f, geo)
            # N = 0 is a readable (empty) file; only validation calls it a problem.
            problems = [p for p in st.problems if not p.startswith("file holds no showers")]
            if problems:
                raise InputFileError(self.path, "; ".join(problems))
        except BaseException:
            self._f.close()
            raise
        self.n_showers = st.n_showers
        self.n_voxels = st.n_voxels
        self.has_angles = st.has_angles
        self.attrs = decode_attrs(self._f.attrs)
        self._showers = self._f[_SHOWERS]
        self._e_inc = self._f[_E_INC]

    def __enter__(self) -> CaloFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n_showers

    def close(self) -> None:
        self._f.close()

    def _bounds(self, start: int, stop: int | None) -> tuple[int, int]:
        n = self.n_showers
        stop = n if stop is None else stop
        start, stop, _ = slice(start, stop).indices(n)
        return start, max(start, stop)

    def incident_energies(self) -> np.ndarray:
        """All incident energies, float64 (N,) MeV (small: read whole)."""
        return _as_e_inc(self._e_inc[...])

    def incident_angles(self) -> np.ndarray | None:
        """All incidence angles, float64 (N,) in the dataset's ``units`` (degrees from
        ``fastsim simulate``), or None when the file has no ``incident_angles`` dataset."""
        if not self.has_angles:
            return None
        return np.asarray(self._f[_ANGLES][...], dtype=np.float64).reshape(-1)

    def incident_angles_deg(self) -> np.ndarray | None:
        """:meth:`incident_angles` in degrees, or None without the dataset.

        Raises:
            InputFileError: the dataset's ``units`` attribute is not ``"deg"`` (absent means degrees).
        """
        if not self.has_angles:
            return None
        units = decode_attrs(self._f[_ANGLES].attrs).get("units", "deg")
        if units != "deg":
            raise InputFileError(self.path, f"{_ANGLES} are in {units!r}; fastsim reads degrees (units='deg')")
        return self.incident_angles()

    def read(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start:stop`` as (e_inc (n,) float64 MeV, showers (n, V) float32 MeV)."""
        start, stop = self._bounds(start, stop)
        return _read_rows(self.path, self._e_inc, self._showers, start, stop)

    def iter_chunks(
        self, chunk_size: int | None = None, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream rows ``start:stop`` in blocks of ``chunk_size`` rows.

        Args:
            chunk_size: rows per block; None: 10 000 rows, fewer if that exceeds 64 MiB
                (:func:`auto_chunk_size`).

        Yields:
            (e_inc (n,) float64 MeV, showers (n, V) float32 MeV) with n <= chunk_size.
        """
        chunk_size = auto_chunk_size(self.n_voxels, chunk_size)
        start, stop = self._bounds(start, stop)
        for lo in range(start, stop, chunk_size):
            yield self.read(lo, min(lo + chunk_size, stop))


def open_calochallenge(path: str | os.PathLike, geometry: Geometry | str | None = None) -> CaloFile:
    """Open a CaloChallenge file for streamed reading (a context manager); see :class:`CaloFile`."""
    return CaloFile(path, geometry=geometry)


def read_calochallenge(
    path: str | os.PathLike, start: int = 0, stop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read rows ``start:stop`` of a CaloChallenge file.

    Returns:
        (e_inc (n,) float64 MeV, showers (n, V) float32 MeV).
    """
    with open_calochallenge(path) as cf:
        return cf.read(start, stop)


# --------------------------------------------------------------------------- writing
# (temporary names, publishing and the output-exists check live in fastsim.outputs; publish and
# temporary_path stay importable from here)


def default_chunk_rows(n_voxels: int, target_bytes: int = 1 << 20) -> int:
    """Rows per HDF5 chunk so that one float32 chunk is about ``target_bytes`` (1 MiB).

    About 1 MiB matches HDF5's default chunk cache, so a chunk is decompressed once per read,
    and keeps gzip's per-chunk overhead small (dataset 1: ~700 rows; dataset 3: ~6 rows).
    """
    return max(1, target_bytes // (4 * max(1, n_voxels)))


# --------------------------------------------------------------------------- parallel chunk writes

#: Compressed chunks in flight at most, in bytes of uncompressed rows (memory stays flat).
MAX_PENDING_BYTES = 32 << 20


def default_write_threads() -> int:
    """Threads compressing chunks by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _direct_level(ds: h5py.Dataset) -> int | bool:
    """How :class:`ChunkRowWriter` may encode ``ds``'s chunks itself.

    Returns the deflate level when gzip is the only filter, and False otherwise: chunks that
    cannot be made here (lzf, shuffle, checksums, chunks narrower than a row) and uncompressed
    chunks (no work to spread over threads; h5py writes them with fewer copies) are written
    through h5py as before.
    """
    if ds.chunks is None or ds.ndim != 2 or ds.chunks[1] != ds.shape[1] or ds.maxshape[0] is not None:
        return False
    dcpl = ds.id.get_create_plist()
    filters = [dcpl.get_filter(i) for i in range(dcpl.get_nfilters())]
    if len(filters) == 1 and filters[0][0] == h5py.h5z.FILTER_DEFLATE:
        values = filters[0][2]
        return int(values[0]) if len(values) else 6  # HDF5's default level
    return False


def _encode_chunk(rows: np.ndarray, chunk_rows: int, dtype: np.dtype, fill: Any, level: int) -> bytes:
    """One stored chunk: ``rows`` (n <= chunk_rows, V) padded with the fill value, deflated.

    HDF5's deflate filter is zlib's ``compress2`` at the dataset's level, which is what
    ``zlib.compress`` calls: the bytes are those h5py would store (same zlib), and a partial last
    chunk is padded with the fill value as HDF5 pads it. zlib releases the GIL while it works.
    """
    if rows.shape[0] < chunk_rows:
        full = np.full((chunk_rows, rows.shape[1]), fill, dtype=dtype)
        full[: rows.shape[0]] = rows
        rows = full
    return zlib.compress(np.ascontiguousarray(rows, dtype=dtype), level)  # reads the array's buffer


class ChunkRowWriter:
    """Append rows to a chunked, resizable 2-D dataset, compressing whole chunks on threads.

    Rows are collected into whole chunks (``ds.chunks[0]`` rows each); each chunk is deflated on
    a thread pool (zlib releases the GIL, so the chunks of one batch are compressed on every core
    while the caller makes the next batch) and written in row order with h5py's direct chunk
    write. The stored chunks are the ones h5py would write itself (same filter, level, padding),
    so the file reads exactly as before. At most :data:`MAX_PENDING_BYTES` of rows (at least two
    chunks per thread) are in flight; :meth:`append` waits for the oldest chunk beyond that, so
    memory stays flat. Rows of an incomplete chunk wait in a tail until the next append or
    :meth:`close`.

    Writing starts at the dataset's current end; if that is inside a chunk, the rows already
    there are read back into the tail and the chunk is rewritten whole. All HDF5 calls happen in
    the calling thread. Datasets whose chunks cannot be encoded here (lzf, shuffle, checksums,
    chunks narrower than a row) and uncompressed ones are written through h5py on the calling
    thread, as before.

    Args:
        ds: the dataset, (N, V) with chunks (rows, V) and unlimited first axis.
        threads: compressing threads; None: :func:`default_write_threads`; 1: in the caller.
    """

    def __init__(self, ds: h5py.Dataset, threads: int | None = None) -> None:
        self._ds = ds
        self._level = _direct_level(ds)
        self.direct = self._level is not False
        self._n = int(ds.shape[0])
        self._tail: list[np.ndarray] = []
        self._tail_rows = 0
        self._pending: collections.deque = collections.deque()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        if not self.direct:
            return
        self._chunk_rows = int(ds.chunks[0])
        self._fill = ds.fillvalue
        self._next_row = self._n - self._n % self._chunk_rows  # first row of the tail's chunk
        if self._next_row < self._n:
            self._tail, self._tail_rows = [ds[self._next_row : self._n]], self._n - self._next_row
        threads = default_write_threads() if threads is None else int(threads)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        chunk_bytes = self._chunk_rows * ds.shape[1] * ds.dtype.itemsize
        self._max_pending = max(2 * threads, MAX_PENDING_BYTES // max(1, chunk_bytes))
        if threads > 1:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fastsim-deflate")

    @property
    def n_rows(self) -> int:
        """Rows appended so far, including those already in the dataset."""
        return self._n

    def append(self, rows: np.ndarray) -> None:
        """Append ``rows`` (n, V); they are copied, so the caller may reuse the array."""
        if self._closed:
            raise ValueError("ChunkRowWriter is closed")
        n = int(rows.shape[0])
        if n == 0:
            return
        self._ds.resize(self._n + n, axis=0)
        if not self.direct:
            self._ds[self._n :] = rows
            self._n += n
            return
        self._n += n
        pos, size = 0, self._chunk_rows
        if self._tail_rows:
            pos = min(size - self._tail_rows, n)
            self._tail.append(np.array(rows[:pos]))
            self._tail_rows += pos
            if self._tail_rows == size:
                self._submit(np.concatenate(self._tail))
                self._tail, self._tail_rows = [], 0
        while n - pos >= size:
            self._submit(np.array(rows[pos : pos + size]))
            pos += size
        if pos < n:
            self._tail, self._tail_rows = [np.array(rows[pos:])], n - pos

    def _submit(self, chunk: np.ndarray) -> None:
        args = (chunk, self._chunk_rows, self._ds.dtype, self._fill, self._level)
        work: Any = self._pool.submit(_encode_chunk, *args) if self._pool else _encode_chunk(*args)
        self._pending.append((self._next_row, work))
        self._next_row += self._chunk_rows
        self._write_ready(self._max_pending)

    def _write_ready(self, keep: int) -> None:
        """Write finished chunks in order; wait for the oldest while more than ``keep`` are pending."""
        while self._pending:
            row, work = self._pending[0]
            if isinstance(work, Future):
                if len(self._pending) <= keep and not work.done():
                    return
                work = work.result()  # re-raises a failed compression here
            self._pending.popleft()
            self._ds.id.write_direct_chunk((row, 0), work, 0)

    def flush(self) -> None:
        """Write every whole chunk appended so far (the tail of an incomplete chunk waits)."""
        if self.direct and not self._closed:
            self._write_ready(0)

    def close(self) -> None:
        """Write everything, the incomplete last chunk (padded as HDF5 pads it) included."""
        if self._closed:
            return
        try:
            if self.direct:
                if self._tail_rows:
                    self._submit(np.concatenate(self._tail))
                    self._tail, self._tail_rows = [], 0
                self._write_ready(0)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._shutdown()

    def abort(self) -> None:
        """Drop what is not written yet (the caller discards the file)."""
        self._closed = True
        for _, work in self._pending:
            if isinstance(work, Future):
                work.cancel()
        self._pending.clear()
        self._tail = []
        self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ChunkRowWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ShowerWriter:
    """Write a CaloChallenge file in appended blocks, atomically.

    Rows go to a temporary file ``.{name}.partial-{pid}`` in the target's directory; a clean
    ``__exit__`` (or :meth:`close`) renames it onto ``path`` (:func:`publish`); any exception,
    ``KeyboardInterrupt`` included, deletes it (so does garbage collection of a writer that was
    never closed), leaving no half-written file behind.

    ``mode="a"`` appends to an existing finished file. It copies the file to the temporary name
    first and appends to the copy: the original stays intact until the rename, so a crash or an
    exception mid-append never corrupts data already on disk. Appending in place would be
    cheaper but an HDF5 file interrupted while open for writing can be left unreadable, and the
    rows already appended could not be rolled back; the copy costs one sequential read and write
    of the existing file. Files that cannot be extended as they are (contiguous or fixed-size
    datasets, as plain ``h5py`` writes them, or a 1-D ``incident_energies``) are rewritten row by
    row into the writer's own layout (compression, chunks, (N, 1)) instead of byte-copied, keeping
    their attributes.

    Args:
        path: the final file.
        n_voxels: V; ``showers`` has shape (N, V).
        attrs: extra attributes; :func:`fastsim.provenance.provenance` attributes are added.
        compression: "gzip" (default; what CaloChallenge readers expect), "lzf" or None.
        compression_opts: gzip level (default 4).
        chunk_rows: rows per HDF5 chunk (default: about 1 MiB of float32 per chunk).
        overwrite: replace an existing ``path`` (mode "w").
        mode: "w" to create, "a" to append to an existing CaloChallenge file.
        threads: threads compressing ``showers`` chunks (:class:`ChunkRowWriter`); None: every
            core this process may use; 1: compress in the calling thread.

    Example::

        with ShowerWriter("out.h5", geo.n_voxels, attrs={"producer": "geant4"}) as w:
            for e, s in batches:
                w.append(e, s)          # e (n,) MeV, s (n, V) MeV
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n_voxels: int,
        attrs: dict[str, Any] | None = None,
        compression: str | None = "gzip",
        compression_opts: int | None = 4,
        chunk_rows: int | None = None,
        overwrite: bool = False,
        mode: str = "w",
        threads: int | None = None,
    ) -> None:
        from fastsim.provenance import provenance

        self.path = os.fspath(path)
        self.n_voxels = int(n_voxels)
        if self.n_voxels < 1:
            raise ValueError(f"n_voxels must be >= 1, got {n_voxels}")
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        if compression not in ("gzip", "lzf", None):
            raise ValueError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")
        self.mode = mode
        self._overwrite = bool(overwrite)
        self.tmp_path = temporary_path(self.path)
        self._closed = False
        self._rows: ChunkRowWriter | None = None
        in_place = False
        if mode == "w":
            check_target(self.path, overwrite)
        else:
            with open_calochallenge(self.path) as cf:  # raises InputFileError if not CaloChallenge
                if cf.n_voxels != self.n_voxels:
                    raise InputFileError(
                        self.path,
                        f"cannot append showers of {self.n_voxels} voxels to a file of {cf.n_voxels}",
                    )
                if cf.has_angles:
                    raise InputFileError(self.path, f"cannot append showers without {_ANGLES} to a file that has them")
                # A copy can be appended to only if both datasets are chunked and resizable and
                # incident_energies is (N, 1); otherwise the rows are rewritten into a new layout.
                in_place = (
                    cf._e_inc.ndim == 2 and cf._showers.maxshape[0] is None and cf._e_inc.maxshape[0] is None
                )
        # Registered before anything is written so a failure below still cleans up.
        self._finalizer = weakref.finalize(self, discard, self.tmp_path)
        try:
            if in_place:
                shutil.copyfile(self.path, self.tmp_path)
                self._f = h5py.File(self.tmp_path, "r+")
                self._showers, self._e_inc = self._f[_SHOWERS], self._f[_E_INC]
                self._rows = ChunkRowWriter(self._showers, threads)
                if attrs:
                    self.set_attrs(**attrs)
            else:
                self._f = h5py.File(self.tmp_path, "w")
                rows = int(chunk_rows) if chunk_rows else default_chunk_rows(self.n_voxels)
                opts = {"compression": compression}
                if compression == "gzip":
                    opts["compression_opts"] = 4 if compression_opts is None else int(compression_opts)
                self._showers = self._f.create_dataset(
                    _SHOWERS,
                    shape=(0, self.n_voxels),
                    maxshape=(None, self.n_voxels),
                    dtype=np.float32,
                    chunks=(rows, self.n_voxels),
                    **opts,
                )
                # incident energies are tiny; larger chunks keep their metadata small
                self._e_inc = self._f.create_dataset(
                    _E_INC,
                    shape=(0, 1),
                    maxshape=(None, 1),
                    dtype=np.float64,
                    chunks=(max(rows, 4096), 1),
                    **opts,
                )
                self._rows = ChunkRowWriter(self._showers, threads)
                if mode == "w":
                    self._f.attrs.update({k: _attr_value(v) for k, v in provenance(**(attrs or {})).items()})
                else:
                    with open_calochallenge(self.path) as cf:
                        for key, value in cf._f.attrs.items():
                            self._f.attrs[key] = value
                        for e, sh in cf.iter_chunks():
                            self.append(e, sh)
                    if attrs:
                        self.set_attrs(**attrs)
        except BaseException:
            self.abort()
            raise

    @property
    def n_written(self) -> int:
        """Rows in the file so far (including pre-existing rows in mode "a")."""
        return int(self._showers.shape[0])

    def append(self, e_inc: np.ndarray, showers: np.ndarray) -> None:
        """Append a block: ``e_inc`` (n,) or (n, 1) MeV, ``showers`` (n, V) MeV."""
        if self._closed:
            raise ValueError("ShowerWriter is closed")
        e = _as_e_inc(e_inc)
        s = np.asarray(showers, dtype=np.float32)
        if s.ndim != 2 or s.shape[1] != self.n_voxels:
            raise ValueError(f"showers must have shape (n, {self.n_voxels}), got {s.shape}")
        if s.shape[0] != e.shape[0]:
            raise ValueError(f"{e.shape[0]} incident energies for {s.shape[0]} showers")
        n0, n = self.n_written, s.shape[0]
        if n == 0:
            return
        assert self._rows is not None
        self._rows.append(s)
        self._e_inc.resize(n0 + n, axis=0)
        self._e_inc[n0:, 0] = e

    def add_dataset(self, name: str, data: np.ndarray, **attrs: Any) -> None:
        """Write an extra per-event dataset (e.g. ``incident_angles`` (N, 1)) with ``attrs``, same compression."""
        if self._closed:
            raise ValueError("ShowerWriter is closed")
        ds = self._f.create_dataset(name, data=np.asarray(data), compression=self._e_inc.compression,
                                    compression_opts=self._e_inc.compression_opts)
        for key, value in attrs.items():
            ds.attrs[key] = _attr_value(value)

    def flush(self) -> None:
        """Wait until every whole chunk appended so far is compressed and written (timing)."""
        if self._rows is not None and not self._closed:
            self._rows.flush()

    def set_attrs(self, **attrs: Any) -> None:
        """Add or replace file attributes (non-scalar values are stored as JSON)."""
        if self._closed:
            raise ValueError("ShowerWriter is closed")
        for key, value in attrs.items():
            if value is not None:
                self._f.attrs[key] = _attr_value(value)

    def close(self) -> None:
        """Finish the file and rename it onto ``path``."""
        if self._closed:
            return
        try:
            if self._rows is not None:
                self._rows.close()
            self._f.close()
            # mode "a" replaces the original by design; mode "w" keeps the overwrite promise
            publish(self.tmp_path, self.path, overwrite=self._overwrite or self.mode == "a")
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._finalizer.detach()

    def abort(self) -> None:
        """Discard everything written: close and delete the temporary file; ``path`` is untouched."""
        self._closed = True
        rows = getattr(self, "_rows", None)
        if rows is not None:
            rows.abort()
        f = getattr(self, "_f", None)
        if f is not None:
            with contextlib.suppress(Exception):
                f.close()
        discard(self.tmp_path)
        self._finalizer.detach()

    def __enter__(self) -> ShowerWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_calochallenge(
    path: str | os.PathLike,
    e_inc: np.ndarray,
    showers: np.ndarray,
    attrs: dict[str, Any] | None = None,
    **writer_kwargs: Any,
) -> None:
    """Write a whole CaloChallenge file atomically: ``e_inc`` (N,) MeV, ``showers`` (N, V) MeV."""
    showers = np.asarray(showers)
    if showers.ndim != 2:
        raise ValueError(f"showers must be 2-D (N, V), got shape {showers.shape}")
    with ShowerWriter(path, showers.shape[1], attrs=attrs, **writer_kwargs) as w:
        w.append(e_inc, showers)


# --------------------------------------------------------------------------- validation


@dataclass
class ValueStats:
    """Counts gathered by the streamed validation pass (also used to skip bad rows).

    Attributes:
        n: showers read.
        e_nonfinite: incident energies that are NaN/inf.
        e_nonpositive: finite incident energies <= 0 MeV.
        e_absurd: incident energies > MAX_INCIDENT_MEV.
        s_nonfinite_values / s_nonfinite_rows: NaN/inf voxel values and the showers holding them.
        s_negative_values / s_negative_rows: voxel values < -NEGATIVE_TOLERANCE_MEV and their showers.
        s_min: the most negative finite voxel value (MeV).
        n_ratio_checked: showers with a valid incident energy and finite deposits.
        n_ratio_high: among those, showers with E_dep > UNIT_RATIO × E_inc.
        e_max: the largest finite incident energy (MeV).
    """

    n: int = 0
    e_nonfinite: int = 0
    e_nonpositive: int = 0
    e_absurd: int = 0
    s_nonfinite_values: int = 0
    s_nonfinite_rows: int = 0
    s_negative_values: int = 0
    s_negative_rows: int = 0
    s_min: float = float("inf")
    n_ratio_checked: int = 0
    n_ratio_high: int = 0
    ratio_samples: list[float] = field(default_factory=list)
    e_max: float = float("-inf")


@dataclass
class RowInfo:
    """Per-row reductions of one chunk, computed in two passes over the showers.

    Attributes:
        row_sum: (n,) float64 deposited energy in MeV; not finite exactly when the row holds a
            NaN/inf (float32 values cannot overflow a float64 sum).
        row_min: (n,) the smallest voxel value (NaN when the row holds a NaN).
        masks: boolean (n,) masks, see :func:`row_problems`.
        nonfinite_values: NaN/inf voxel values in the chunk.
        negative_values: voxel values below -NEGATIVE_TOLERANCE_MEV in the chunk.
        min_finite: the smallest finite voxel value (inf when none).
    """

    row_sum: np.ndarray
    row_min: np.ndarray
    masks: dict[str, np.ndarray]
    nonfinite_values: int
    negative_values: int
    min_finite: float


def row_info(e_inc: np.ndarray, showers: np.ndarray) -> RowInfo:
    """Per-row checks of a chunk: ``e_inc`` (n,) MeV, ``showers`` (n, V) MeV.

    Element-wise tests (isfinite, < -tol) run only on the rows whose sum or minimum flags them,
    so a clean chunk costs one sum and one min over the showers.
    """
    n, v = showers.shape
    tol = -NEGATIVE_TOLERANCE_MEV
    with np.errstate(invalid="ignore"):  # inf - inf in a sum, NaN comparisons: flagged below
        row_sum = showers.sum(axis=1, dtype=np.float64)
        row_min = showers.min(axis=1) if v else np.zeros(n, dtype=np.float32)
        row_fin = np.isfinite(row_sum)
        neg_rows = row_min < tol  # False for rows whose min is NaN: handled below
        nonfinite_values, min_finite = 0, float(row_min[row_fin].min()) if row_fin.any() else np.inf
        if not row_fin.all():
            sub = showers[~row_fin]
            sub_fin = np.isfinite(sub)
            nonfinite_values = int(sub.size - sub_fin.sum())
            neg_rows[~row_fin] = (sub < tol).any(axis=1)
            if sub_fin.any():
                min_finite = min(min_finite, float(np.min(sub, where=sub_fin, initial=np.inf)))
        negative_values = int((showers[neg_rows] < tol).sum()) if neg_rows.any() else 0
        e_fin = np.isfinite(e_inc)
        masks = {
            "non-finite": ~(e_fin & row_fin),
            "incident energy <= 0": e_fin & (e_inc <= 0),
            "incident energy > 1e8 MeV": e_fin & (e_inc > MAX_INCIDENT_MEV),
            "negative voxel energies": neg_rows,
        }
    return RowInfo(row_sum, row_min, masks, nonfinite_values, negative_values, min_finite)


def row_problems(e_inc: np.ndarray, showers: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row masks of the value problems that make one shower unusable.

    Args:
        e_inc: (n,) MeV.
        showers: (n, V) MeV.

    Returns:
        dict of boolean (n,) masks: ``"non-finite"`` (NaN/inf anywhere in the row or its
        incident energy), ``"incident energy <= 0"``, ``"incident energy > 1e8 MeV"`` and
        ``"negative voxel energies"`` (below -NEGATIVE_TOLERANCE_MEV).
    """
    return row_info(e_inc, showers).masks


def _accumulate(st: ValueStats, e: np.ndarray, info: RowInfo) -> None:
    st.n += len(e)
    e_fin = np.isfinite(e)
    st.e_nonfinite += int((~e_fin).sum())
    st.e_nonpositive += int(info.masks["incident energy <= 0"].sum())
    st.e_absurd += int(info.masks["incident energy > 1e8 MeV"].sum())
    if e_fin.any():
        st.e_max = max(st.e_max, float(e[e_fin].max()))
    row_fin = np.isfinite(info.row_sum)
    st.s_nonfinite_values += info.nonfinite_values
    st.s_nonfinite_rows += int((~row_fin).sum())
    st.s_negative_values += info.negative_values
    st.s_negative_rows += int(info.masks["negative voxel energies"].sum())
    st.s_min = min(st.s_min, info.min_finite)
    ok = e_fin & (e > 0) & row_fin
    if ok.any():
        # sums in float64: float32 sums of thousands of voxels lose the digits the ratio needs
        ratio = info.row_sum[ok] / e[ok]
        st.n_ratio_checked += int(ok.sum())
        st.n_ratio_high += int((ratio > UNIT_RATIO).sum())
        if len(st.ratio_samples) < 100_000:
            st.ratio_samples.extend(ratio[: 100_000 - len(st.ratio_samples)].tolist())


def _value_problems(st: ValueStats) -> list[tuple[str, str]]:
    """(kind, message) for every value problem in ``st``; kinds: nonfinite, energy, negative, units."""
    out: list[tuple[str, str]] = []
    if st.e_nonfinite:
        out.append(("nonfinite", f"incident_energies has {st.e_nonfinite} non-finite values (NaN/inf)"))
    if st.s_nonfinite_values:
        out.append(
            (
                "nonfinite",
                f"showers have {st.s_nonfinite_values} non-finite voxel values (NaN/inf) in {st.s_nonfinite_rows} showers",
            )
        )
    if st.e_nonpositive:
        out.append(("energy", f"incident_energies has {st.e_nonpositive} values <= 0 MeV"))
    if st.e_absurd:
        out.append(
            (
                "energy",
                f"incident_energies has {st.e_absurd} values above {MAX_INCIDENT_MEV:.0e} MeV (100 TeV), "
                f"max {st.e_max:.4g} MeV",
            )
        )
    if st.s_negative_values:
        out.append(
            (
                "negative",
                f"showers have {st.s_negative_values} negative voxel energies below -{NEGATIVE_TOLERANCE_MEV:g} MeV "
                f"in {st.s_negative_rows} showers (min {st.s_min:.4g} MeV)",
            )
        )
    if st.n_ratio_checked and st.n_ratio_high > UNIT_FRACTION * st.n_ratio_checked:
        median = float(np.median(st.ratio_samples)) if st.ratio_samples else float("nan")
        out.append(
            (
                "units",
                f"deposited energy exceeds {UNIT_RATIO:g} x the incident energy in {st.n_ratio_high} of "
                f"{st.n_ratio_checked} showers (median E_dep/E_inc {median:.3g}): units look mixed up "
                f"(incident energies in GeV?), expected MeV for both datasets",
            )
        )
    if st.ratio_samples and not any(kind == "units" for kind, _ in out):
        median = float(np.median(st.ratio_samples))
        if 0 < median < UNIT_LOW_RATIO:
            out.append(
                (
                    "units",
                    f"median E_dep/E_inc is {median:.3g}: the deposits look like GeV while the incident "
                    "energies are MeV (1000x too small), expected MeV for both datasets",
                )
            )
    if np.isfinite(st.e_max) and st.e_max < MIN_PLAUSIBLE_MAX_INCIDENT_MEV:
        out.append(
            (
                "units",
                f"all incident energies are below {MIN_PLAUSIBLE_MAX_INCIDENT_MEV:g} MeV (max {st.e_max:.4g}): "
                "they look like GeV, expected MeV",
            )
        )
    return out


def validate_detailed(
    path: str | os.PathLike | CaloFile,
    geometry: Geometry | str | None = None,
    chunk_size: int | None = None,
    on_chunk: Callable[[int, np.ndarray, np.ndarray, RowInfo], None] | None = None,
) -> tuple[list[tuple[str, str]], ValueStats | None]:
    """Like :func:`validate_calochallenge` but returns ``(kind, message)`` pairs and the counts.

    Kinds: ``"file"`` and ``"structure"`` (nothing further can be read), ``"nonfinite"``,
    ``"energy"``, ``"negative"`` (per-shower problems that can be skipped row by row) and
    ``"units"`` (file-wide).

    Args:
        path: the file, or a :class:`CaloFile` already open (read, and left open).
        on_chunk: called as ``on_chunk(start_row, e_inc (n,), showers (n, V), row_info)`` for
            every chunk read, so callers (progress bars, row masks, conversion) share the one
            streamed pass and its per-row checks (:class:`RowInfo`).
    """
    geo = Geometry.resolve(geometry) if geometry is not None else None
    if isinstance(path, CaloFile):
        return _validate_values(path.path, path._f, geo, chunk_size, on_chunk)
    path = os.fspath(path)
    try:
        f = open_h5(path)
    except InputFileError as err:
        return [("file", err.problem)], None
    with f:
        return _validate_values(path, f, geo, chunk_size, on_chunk)


def _validate_values(
    path: str,
    f: h5py.File,
    geo: Geometry | None,
    chunk_size: int | None,
    on_chunk: Callable[[int, np.ndarray, np.ndarray, RowInfo], None] | None,
) -> tuple[list[tuple[str, str]], ValueStats | None]:
    st = _inspect(f, geo)
    if st.problems:
        return [("structure", p) for p in st.problems], None
    sh, ei = f[_SHOWERS], f[_E_INC]
    chunk_size = auto_chunk_size(st.n_voxels, chunk_size)
    stats = ValueStats()
    for lo in range(0, st.n_showers, chunk_size):
        hi = min(lo + chunk_size, st.n_showers)
        try:
            e, s = _read_rows(path, ei, sh, lo, hi)
        except InputFileError as err:
            return [*_value_problems(stats), ("file", err.problem)], stats
        info = row_info(e, s)
        _accumulate(stats, e, info)
        if on_chunk is not None:
            on_chunk(lo, e, s, info)
    angle_problems = []
    if st.has_angles:
        bad = int(np.sum(~np.isfinite(np.asarray(f[_ANGLES][...], dtype=np.float64))))
        if bad:
            angle_problems.append(("angles", f"{_ANGLES} has {bad} non-finite values"))
    return [*_value_problems(stats), *angle_problems], stats


def validate_calochallenge(
    path: str | os.PathLike,
    geometry: Geometry | str | None = None,
    chunk_size: int | None = None,
    check_units: bool = True,
) -> list[str]:
    """Every problem found in a CaloChallenge file, streaming the values in chunks.

    See the module docstring for the rules. Structural problems (missing datasets, wrong shapes,
    N mismatch, voxel count against ``geometry``, N = 0) stop the check before the values are read.

    Args:
        path: the file.
        geometry: a Geometry, built-in name or XML path to check the voxel count against; None skips it.
        chunk_size: rows read at a time (None: :func:`auto_chunk_size`).
        check_units: apply the GeV/MeV heuristics. They are meant for simulated input; a
            generator early in training can deposit more than 1.5 x E_inc in MeV quite
            legitimately, so readers of generated files may turn them off.

    Returns:
        Problem descriptions (without the path); empty when the file is fine.
    """
    problems, _ = validate_detailed(path, geometry, chunk_size)
    return [msg for kind, msg in problems if check_units or kind != "units"]


def check_calochallenge(
    path: str | os.PathLike,
    geometry: Geometry | str | None = None,
    chunk_size: int | None = None,
    check_units: bool = True,
) -> None:
    """Raise :class:`InputFileError` naming ``path`` and all its problems, if it has any."""
    problems = validate_calochallenge(path, geometry, chunk_size, check_units=check_units)
    if problems:
        raise InputFileError(path, "; ".join(problems))


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "auto_chunk_size",
    "default_write_threads",
    "MAX_INCIDENT_MEV",
    "NEGATIVE_TOLERANCE_MEV",
    "CaloFile",
    "ChunkRowWriter",
    "ShowerWriter",
    "RowInfo",
    "ValueStats",
    "check_calochallenge",
    "decode_attrs",
    "default_chunk_rows",
    "open_calochallenge",
    "open_h5",
    "publish",
    "read_calochallenge",
    "row_info",
    "row_problems",
    "temporary_path",
    "validate_calochallenge",
    "validate_detailed",
    "write_calochallenge",
]

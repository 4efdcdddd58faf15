"""CIFAR-10 / CIFAR-100 from the official python version, as one uint8 tensor.

The data may be an unpacked folder (``cifar-10-batches-py/``, ``cifar-100-python/``) or an archive
(``cifar-10-python.tar.gz`` as distributed, or any ``.tar``/``.tar.gz``/``.tar.xz``/... whose stem is
the folder name). Archives are read in place with :mod:`tarfile`, never unpacked, so the data
directory may be read-only.

The batch files are pickles (Python 2 pickles of dicts with bytes keys holding a numpy array and
lists). They are read with a restricted unpickler that resolves only the few numpy globals those
files need; any other global (``os.system``, ``builtins.exec``, ...) is refused before anything is
called, with a :class:`~torchcls.errors.UserError`.

Decompressing the .tar.xz takes several seconds, so decoded arrays from an archive are kept in a
cache (an uncompressed ``.npz`` read back without pickle) under ``$TORCHCLS_CACHE`` or
``~/.cache/torchcls``, keyed by the archive's path, size and modification time. Set
``TORCHCLS_CACHE=off`` (or pass ``cache=False``) to turn it off.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import pickle
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ..errors import UserError
from .base import ArrayDataset
from .stats import DATASETS, DatasetInfo

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

ARCHIVE_EXTS = (".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tar")
CACHE_VERSION = 1
_IMAGE_BYTES = 3 * 32 * 32


@dataclass(frozen=True)
class CifarSpec:
    """How one CIFAR data set's files are laid out; its title, class count and mean/std are its
    row of the data-set table (stats.DATASETS)."""

    name: str
    folder: str
    archive_stems: tuple[str, ...]
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    torchvision_class: str  # the torchvision.datasets class whose url and md5 `--download` uses

    @property
    def info(self) -> DatasetInfo:
        return DATASETS[self.name]

    @property
    def title(self) -> str:
        return self.info.title

    @property
    def num_classes(self) -> int:
        return self.info.num_classes


SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        name="cifar10",
        folder="cifar-10-batches-py",
        archive_stems=("cifar-10-python", "cifar-10-batches-py"),
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        torchvision_class="CIFAR10",
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        folder="cifar-100-python",
        archive_stems=("cifar-100-python",),
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        torchvision_class="CIFAR100",
    ),
}


# --------------------------------------------------------------------------- safe unpickling


def _latin1_encode(obj, encoding="latin1"):
    """What Python 3 writes for a bytes object at pickle protocol 2 (``_codecs.encode(s, 'latin1')``);
    only that exact use is allowed, so no other codec can be reached."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed as (str, 'latin1')")
    return obj.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    reconstruct = _multiarray._reconstruct

    def _reconstruct(subtype, shape, dtype):
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError("_reconstruct is only allowed for numpy.ndarray")
        return reconstruct(subtype, shape, dtype)

    return {
        # the official files (Python 2, numpy 1.x) name these three
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # the same arrays re-pickled by numpy >= 2
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        # bytes re-pickled by Python 3 at protocol 2
        ("_codecs", "encode"): _latin1_encode,
    }


class ForbiddenGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module = module
        self.qualname = name


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        allowed = _RestrictedUnpickler._allowed
        if allowed is None:
            allowed = _RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return allowed[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(module, name) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_unpickle(data: bytes, source: str):
    """Unpickle a CIFAR batch file; only numpy arrays, dtypes, dicts, lists and scalars come out."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except ForbiddenGlobal as e:
        raise UserError(
            f"{source}: refused to unpickle: it references the global {e.module}.{e.qualname}, which no CIFAR "
            f"batch file contains (only numpy arrays, lists and dicts are allowed); the file is corrupt or "
            f"malicious, replace it with the official one"
        ) from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged pickle raises, it is a corrupt file
        raise UserError(
            f"{source}: not a readable CIFAR batch file ({type(e).__name__}: {e}); it is corrupt or "
            f"truncated, replace it with the official one"
        ) from None


# --------------------------------------------------------------------------- batch validation


def _get(d, key: str, source: str):
    if not isinstance(d, dict):
        raise UserError(f"{source}: not a CIFAR batch file (holds a {type(d).__name__}, expected a dict)")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise UserError(f"{source}: not a CIFAR batch file (no {key!r} entry); replace it with the official one")


def _parse_batch(obj, spec: CifarSpec, source: str) -> tuple[np.ndarray, np.ndarray]:
    data = _get(obj, "data", source)
    labels = _get(obj, spec.label_key, source)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMAGE_BYTES:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{source}: 'data' must be uint8 N x {_IMAGE_BYTES}, got {got}; the file is corrupt")
    try:
        lab = np.asarray(labels)
    except Exception:  # noqa: BLE001 - anything odd in the labels is a corrupt file
        lab = None
    if lab is None or lab.ndim != 1 or lab.dtype.kind not in "iu":
        raise UserError(f"{source}: {spec.label_key!r} must be a list of integers; the file is corrupt")
    if lab.shape[0] != data.shape[0]:
        raise UserError(f"{source}: {data.shape[0]} images but {lab.shape[0]} labels; the file is corrupt")
    if lab.size and (lab.min() < 0 or lab.max() >= spec.num_classes):
        raise UserError(
            f"{source}: labels must be in [0, {spec.num_classes}), found {int(lab.min())}..{int(lab.max())}; "
            f"the file is corrupt or not {spec.title}"
        )
    return data, lab.astype(np.int64)


def _parse_meta(obj, spec: CifarSpec, source: str) -> list[str]:
    names = _get(obj, spec.names_key, source)
    if not isinstance(names, (list, tuple)) or len(names) != spec.num_classes:
        raise UserError(f"{source}: {spec.names_key!r} must list {spec.num_classes} class names; the file is corrupt")
    out = []
    for n in names:
        if isinstance(n, bytes):
            n = n.decode("utf-8", errors="replace")
        if not isinstance(n, str):
            raise UserError(f"{source}: {spec.names_key!r} must hold strings; the file is corrupt")
        out.append(n)
    return out


# --------------------------------------------------------------------------- finding the data


def _candidates(spec: CifarSpec, data_dir: Path) -> list[Path]:
    paths = []
    if data_dir.name == spec.folder:
        paths.append(data_dir)
    paths.append(data_dir / spec.folder)
    for stem in spec.archive_stems:
        for ext in ARCHIVE_EXTS:
            paths.append(data_dir / (stem + ext))
    return paths


def locate(spec: CifarSpec, data_dir: Path) -> Path | None:
    """The folder or archive holding `spec`'s files: `data_dir` itself (a folder with the batch
    files, or an archive), or the folder/archive inside it; None when nothing is there."""
    if data_dir.is_file():
        return data_dir
    if data_dir.is_dir() and (data_dir / spec.meta_file).is_file():
        return data_dir
    for p in _candidates(spec, data_dir):
        is_archive = p.name.endswith(ARCHIVE_EXTS)
        if (is_archive and p.is_file()) or (not is_archive and p.is_dir()):
            return p
    return None


def _missing_message(spec: CifarSpec, data_dir: Path) -> str:
    looked = ", ".join(str(p) for p in _candidates(spec, data_dir))
    return (
        f"{spec.title} not found: looked at {looked}; pass --data-dir pointing at the directory holding "
        f"{spec.folder}/ or {spec.archive_stems[0]}.tar.gz (or at the folder/archive itself), "
        f"or add --download to fetch it"
    )


def _default_data_dir() -> Path:
    env = os.environ.get("TORCHCLS_DATA")
    return Path(env) if env else Path("data")


# --------------------------------------------------------------------------- reading


def _read_folder(spec: CifarSpec, folder: Path, files: tuple[str, ...]) -> dict[str, object]:
    out = {}
    for f in files:
        p = folder / f
        if not p.is_file():
            raise UserError(
                f"{p} is missing: {folder} must hold the official {spec.title} files "
                f"({', '.join((*spec.train_files, *spec.test_files, spec.meta_file))})"
            )
        try:
            data = p.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {p}: {e.strerror or e}") from None
        out[f] = safe_unpickle(data, str(p))
    return out


def _member_key(spec: CifarSpec, member: tarfile.TarInfo, wanted: set[str]) -> str | None:
    if not member.isfile():
        return None
    parts = [p for p in PurePosixPath(member.name).parts if p not in (".", "")]
    if len(parts) == 1 and parts[0] in wanted:
        return parts[0]
    if len(parts) == 2 and parts[0] == spec.folder and parts[1] in wanted:
        return parts[1]
    return None


def _read_archive(spec: CifarSpec, archive: Path, files: tuple[str, ...]) -> dict[str, object]:
    """Read `files` out of the archive in one sequential pass (no extraction, no seeking)."""
    wanted = set(files)
    out: dict[str, object] = {}
    try:
        with tarfile.open(archive, mode="r:*") as tf:
            for member in tf:
                key = _member_key(spec, member, wanted)
                if key is None or key in out:
                    continue
                fobj = tf.extractfile(member)
                if fobj is None:
                    continue
                data = fobj.read()
                if len(data) != member.size:
                    raise EOFError(f"{member.name} is truncated")
                out[key] = safe_unpickle(data, f"{archive}:{member.name}")
                if len(out) == len(wanted):
                    break
    except UserError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, lzma.LZMAError, zlib.error) as e:
        raise UserError(
            f"{archive}: cannot read the archive ({type(e).__name__}: {e}); it is corrupt or truncated, "
            f"fetch it again (or use --download)"
        ) from None
    missing = [f for f in files if f not in out]
    if missing:
        raise UserError(
            f"{archive} lacks {', '.join(missing)}: it is not the official {spec.title} python archive "
            f"(expected {spec.folder}/{{{', '.join(files)}}})"
        )
    return out


def _assemble(spec: CifarSpec, objs: dict[str, object], files: tuple[str, ...], where: str):
    images, labels = [], []
    for f in files:
        d, lab = _parse_batch(objs[f], spec, f"{where}/{f}")
        images.append(d)
        labels.append(lab)
    x = np.concatenate(images).reshape(-1, 3, 32, 32)
    y = np.concatenate(labels)
    return x, y


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path | None:
    """$TORCHCLS_CACHE, or ~/.cache/torchcls; None when TORCHCLS_CACHE is off/0/none/empty."""
    env = os.environ.get("TORCHCLS_CACHE")
    if env is not None:
        if env.strip().lower() in ("", "0", "off", "none", "false", "no"):
            return None
        return Path(env).expanduser()
    return Path.home() / ".cache" / "torchcls"


def _cache_path(spec: CifarSpec, archive: Path, root: Path) -> Path:
    st = archive.stat()
    ident = f"v{CACHE_VERSION}|{spec.name}|{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:20]
    return root / f"{spec.name}-{key}.npz"


def _check_arrays(spec: CifarSpec, x: np.ndarray, y: np.ndarray) -> bool:
    return (
        x.dtype == np.uint8
        and x.ndim == 4
        and x.shape[1:] == (3, 32, 32)
        and y.dtype == np.int64
        and y.shape == (x.shape[0],)
        and (y.size == 0 or (int(y.min()) >= 0 and int(y.max()) < spec.num_classes))
    )


def _load_cache(spec: CifarSpec, path: Path, train: bool):
    split = "train" if train else "test"
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z[f"{split}_images"], z[f"{split}_labels"]
            classes = [str(c) for c in z["classes"]]
    except Exception:  # noqa: BLE001 - a bad cache file is ignored and rewritten
        return None
    if not _check_arrays(spec, x, y) or len(classes) != spec.num_classes:
        return None
    return x, y, classes


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temp file in the same folder, then rename); failures are ignored."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# --------------------------------------------------------------------------- download


def _download(spec: CifarSpec, data_dir: Path) -> None:
    """Fetch the official archive into data_dir with torchvision (url, file name and md5 from its
    CIFAR10/CIFAR100 classes). Only the download is used: torchvision would otherwise unpack the
    archive and unpickle the batches without restriction; we read the archive ourselves.
    torchvision is imported here, not at the top: importing it takes seconds, and only a download needs it."""
    import torchvision.datasets as tvd  # noqa: PLC0415
    import torchvision.datasets.utils as tvu  # noqa: PLC0415

    cls = getattr(tvd, spec.torchvision_class)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        tvu.download_url(cls.url, str(data_dir), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as e:  # noqa: BLE001 - network, disk and checksum failures alike
        raise UserError(
            f"could not download {spec.title} into {data_dir} ({type(e).__name__}: {e}); fetch "
            f"{cls.filename} by hand and pass --data-dir pointing at its directory"
        ) from None


# --------------------------------------------------------------------------- entry point


def load_cifar(
    name: str,
    data_dir: str | os.PathLike | None,
    train: bool,
    download: bool = False,
    cache: bool = True,
) -> ArrayDataset:
    """CIFAR-10 or CIFAR-100 ("cifar10" / "cifar100"), the train or test split, as an ArrayDataset.

    data_dir: the directory holding the folder or archive, or the folder or archive itself
        (None: $TORCHCLS_DATA, else ./data).
    download: fetch the official archive into data_dir when nothing is found there.
    cache: keep/reuse decoded arrays of an archive in the cache directory (see `cache_dir`).
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in SPECS:
        raise UserError(f"unknown CIFAR data set {name!r}; choose cifar10 or cifar100")
    spec = SPECS[key]
    data_dir = Path(data_dir).expanduser() if data_dir is not None else _default_data_dir()

    source = locate(spec, data_dir)
    if source is None and download:
        _download(spec, data_dir if not data_dir.is_file() else data_dir.parent)
        source = locate(spec, data_dir)
    if source is None:
        raise UserError(_missing_message(spec, data_dir))

    mean, std = spec.info.mean, spec.info.std
    files = spec.train_files if train else spec.test_files

    if source.is_dir():
        objs = _read_folder(spec, source, (*files, spec.meta_file))
        x, y = _assemble(spec, objs, files, str(source))
        classes = _parse_meta(objs[spec.meta_file], spec, str(source / spec.meta_file))
    else:
        root = cache_dir() if cache else None
        cpath = None
        hit = None
        if root is not None:
            try:
                cpath = _cache_path(spec, source, root)
            except OSError:
                cpath = None
            if cpath is not None and cpath.is_file():
                hit = _load_cache(spec, cpath, train)
        if hit is not None:
            x, y, classes = hit
        elif cpath is not None:
            # decode both splits in the one pass the compressed stream needs anyway, keep them
            all_files = (*spec.train_files, *spec.test_files, spec.meta_file)
            objs = _read_archive(spec, source, all_files)
            where = f"{source}:{spec.folder}"
            tx, ty = _assemble(spec, objs, spec.train_files, where)
            vx, vy = _assemble(spec, objs, spec.test_files, where)
            classes = _parse_meta(objs[spec.meta_file], spec, f"{where}/{spec.meta_file}")
            del objs
            _write_cache(
                cpath,
                {
                    "train_images": tx,
                    "train_labels": ty,
                    "test_images": vx,
                    "test_labels": vy,
                    "classes": np.array(classes, dtype=str),
                },
            )
            x, y = (tx, ty) if train else (vx, vy)
        else:
            objs = _read_archive(spec, source, (*files, spec.meta_file))
            where = f"{source}:{spec.folder}"
            x, y = _assemble(spec, objs, files, where)
            classes = _parse_meta(objs[spec.meta_file], spec, f"{where}/{spec.meta_file}")

    return ArrayDataset(
        images=torch.from_numpy(np.ascontiguousarray(x)),
        labels=torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
        classes=classes,
        mean=mean,
        std=std,
    )

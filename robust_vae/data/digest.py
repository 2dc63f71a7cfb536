"""What a run's fingerprint records about its data: the sha256 of the dataset's files."""

from __future__ import annotations

from pathlib import Path

from robust_vae.core.hashing import sha256_of
from robust_vae.data.base import PathArg, dataset_folder, dataset_source
from robust_vae.data.idx import IDX_FILES, IDXDataset, find_file

_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256, per process


def file_sha256(path: Path) -> str:
    """sha256 of one file, cached per process by path, size and modification time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_of(path)
    return _DIGESTS[key]


def dataset_digest(name: str, data_dir: PathArg | None = None) -> dict[str, str]:
    """File name -> sha256 of every file a dataset is read from (the IDX files; every file of an
    ``imagefolder`` root); a dataset rendered by code (dSprites) records that instead (the code's
    version is in ``run.json``'s versions)."""
    source = dataset_source(name)
    if isinstance(source, IDXDataset):
        folder = source.folder(data_dir)
        digests = {}
        for images, labels, _ in IDX_FILES.values():
            for stem in (images, labels):
                path = find_file(folder, stem)
                if path is not None:
                    digests[path.name] = file_sha256(path)
        return digests
    root, _ = dataset_folder(source.name, data_dir)
    if source.name == "imagefolder" and root is not None and root.is_dir():
        # a user's folder: every file under it, by relative path (mtime-cached, so reruns are cheap)
        return {str(path.relative_to(root)): file_sha256(path)
                for path in sorted(root.rglob("*")) if path.is_file()}
    return {"source": f"{source.name} ({type(source).__module__}.{type(source).__name__}), rendered by code"}

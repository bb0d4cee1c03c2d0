from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from image_router.storage.base import StorageError, Store
from image_router.storage.local import LocalStore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture
def store(root: Path) -> LocalStore:
    return LocalStore(root, "http://localhost:8000/files/")


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".")]


async def test_put_get_delete_round_trip(store: LocalStore, root: Path) -> None:
    url = await store.put("gen-1.png", b"\x89PNG fake", "image/png")

    assert url == "http://localhost:8000/files/gen-1.png"
    assert (root / "gen-1.png").read_bytes() == b"\x89PNG fake"
    assert await store.get("gen-1.png") == (b"\x89PNG fake", "image/png")

    await store.delete("gen-1.png")
    assert await store.get("gen-1.png") is None
    assert not (root / "gen-1.png").exists()


async def test_satisfies_the_store_protocol(store: LocalStore) -> None:
    generic: Store = store
    await generic.put("a.webp", b"x", "image/webp")
    assert await generic.get("a.webp") == (b"x", "image/webp")
    await generic.close()


def test_root_is_created(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "nested" / "dir"
    LocalStore(root, "/files")
    assert root.is_dir()


def test_root_that_cannot_be_created_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="Cannot create storage directory"):
        LocalStore(blocker / "outputs", "/files")


@pytest.mark.parametrize(
    ("prefix", "url"),
    [
        ("https://cdn.example/o", "https://cdn.example/o/id-0.mp4"),
        ("https://cdn.example/o///", "https://cdn.example/o/id-0.mp4"),
        ("/files", "/files/id-0.mp4"),
    ],
)
def test_url_for(root: Path, prefix: str, url: str) -> None:
    assert LocalStore(root, prefix).url_for("id-0.mp4") == url


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("a.jpg", "image/jpeg"),
        ("a.JPEG", "image/jpeg"),
        ("a.svg", "image/svg+xml"),
        ("a.mov", "video/quicktime"),
        ("a.bin", "application/octet-stream"),
        ("no-extension", "application/octet-stream"),
    ],
)
async def test_content_type_comes_from_the_extension(
    store: LocalStore, name: str, content_type: str
) -> None:
    await store.put(name, b"data", "whatever/was-given")
    assert await store.get(name) == (b"data", content_type)


async def test_get_missing_is_none(store: LocalStore) -> None:
    assert await store.get("never-written.png") is None


async def test_delete_missing_is_not_an_error(store: LocalStore) -> None:
    await store.delete("never-written.png")


async def test_put_replaces_and_leaves_no_temp_files(store: LocalStore, root: Path) -> None:
    await store.put("a.png", b"first", "image/png")
    await store.put("a.png", b"second", "image/png")
    assert await store.get("a.png") == (b"second", "image/png")
    assert leftovers(root) == []


async def test_written_files_are_world_readable(store: LocalStore, root: Path) -> None:
    await store.put("a.png", b"x", "image/png")
    assert stat.S_IMODE((root / "a.png").stat().st_mode) == 0o644


async def test_readers_never_see_a_partial_write(store: LocalStore) -> None:
    size = 4 * 1024 * 1024
    versions = [bytes([n]) * size for n in range(2)]
    await store.put("big.png", versions[0], "image/png")
    done = asyncio.Event()
    seen: set[bytes] = set()

    async def writer() -> None:
        for i in range(20):
            await store.put("big.png", versions[i % 2], "image/png")
        done.set()

    async def reader() -> None:
        while not done.is_set():
            got = await store.get("big.png")
            assert got is not None
            data, _ = got
            assert len(data) == size
            assert data.count(data[:1]) == size, "read a mix of two writes"
            seen.add(data[:1])

    await asyncio.gather(writer(), reader(), reader())
    assert seen  # the readers actually ran while writing


async def test_failed_write_keeps_the_old_file_and_cleans_up(store: LocalStore, root: Path) -> None:
    await store.put("a.png", b"old", "image/png")
    not_bytes: bytes = "text is not bytes"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        await store.put("a.png", not_bytes, "image/png")
    assert (root / "a.png").read_bytes() == b"old"
    assert leftovers(root) == []


@pytest.fixture
def rootless_store(store: LocalStore, root: Path) -> LocalStore:
    root.rmdir()
    return store


async def test_write_into_a_vanished_root_is_a_storage_error(
    rootless_store: LocalStore,
) -> None:
    with pytest.raises(StorageError, match=r"Cannot write a\.png"):
        await rootless_store.put("a.png", b"x", "image/png")


async def test_reading_a_directory_is_a_storage_error(store: LocalStore, root: Path) -> None:
    (root / "adir").mkdir()
    with pytest.raises(StorageError, match="Cannot read adir"):
        await store.get("adir")


BAD_NAMES = [
    "",
    "../x",
    "..",
    ".",
    "a/b",
    "/etc/passwd",
    "a\\b",
    ".hidden",
    ".tmp-abc",
    "-leading-dash",
    "a b",
    "a\n",
    "a\x00b",
    "é.png",
    "x" * 202,
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_invalid_names_are_rejected(store: LocalStore, root: Path, name: str) -> None:
    with pytest.raises(StorageError, match="Invalid storage object name"):
        await store.put(name, b"x", "image/png")
    with pytest.raises(StorageError, match="Invalid storage object name"):
        await store.get(name)
    with pytest.raises(StorageError, match="Invalid storage object name"):
        await store.delete(name)
    with pytest.raises(StorageError, match="Invalid storage object name"):
        store.url_for(name)
    assert tree(root.parent) == ["outputs"]


async def test_longest_valid_name(store: LocalStore) -> None:
    name = "x" * 201
    await store.put(name, b"x", "image/png")
    assert await store.get(name) == (b"x", "application/octet-stream")


async def test_concurrent_puts_of_distinct_names(store: LocalStore, root: Path) -> None:
    names = [f"gen-{i}.webp" for i in range(50)]
    urls = await asyncio.gather(*(store.put(n, n.encode() * 1000, "image/webp") for n in names))
    assert urls == [f"http://localhost:8000/files/{n}" for n in names]
    results = await asyncio.gather(*(store.get(n) for n in names))
    assert results == [(n.encode() * 1000, "image/webp") for n in names]
    assert leftovers(root) == []


async def test_concurrent_puts_of_one_name_leave_one_whole_file(
    store: LocalStore, root: Path
) -> None:
    payloads = [bytes([i]) * 100_000 for i in range(50)]
    await asyncio.gather(*(store.put("same.png", p, "image/png") for p in payloads))
    got = await store.get("same.png")
    assert got is not None
    assert got[0] in payloads
    assert sorted(os.listdir(root)) == ["same.png"]


async def test_close_keeps_files(store: LocalStore, root: Path) -> None:
    await store.put("a.gif", b"GIF89a", "image/gif")
    await store.close()
    assert (root / "a.gif").read_bytes() == b"GIF89a"

"""The venv cache, with real ``python -m venv`` and real pip (PyPI or pip's cache)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.venvs import Venv, VenvBuildError, VenvCache, normalised_requirements

REPO = Path(__file__).resolve().parents[2]
# Small, pure Python, with a console script (waitress-serve) to check the relocation.
PACKAGE = "waitress==3.0.2"
MISSING = "this-package-does-not-exist-ofc==0.0.1"


@pytest.fixture
def cache(tmp_path: Path) -> VenvCache:
    return VenvCache(tmp_path / "venvs")


@pytest.fixture
def spawns(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the argv of every asyncio subprocess started, still starting it for real."""
    calls: list[list[str]] = []
    real = asyncio.create_subprocess_exec

    async def recording(*argv: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        calls.append([str(a) for a in argv])
        return await real(*argv, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    return calls


def fake_interpreter(tmp_path: Path, body: str) -> str:
    """A stand-in "python" that answers the version probe and runs ``body`` for anything else.

    Used only where real pip cannot be made to print what the test needs.
    """
    script = tmp_path / "fake-python"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-c" ]; then echo "cpython 3.11.7"; exit 0; fi\n' + textwrap.dedent(body)
    )
    script.chmod(0o755)
    return str(script)


def leftovers(root: Path) -> list[str]:
    """Entries under the cache root other than the lock directory."""
    return sorted(p.name for p in root.iterdir() if p.name != ".locks") if root.exists() else []


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["flask==3.1.3\n"], ["# the web framework\nflask==3.1.3  # pinned\n\n"]),
        (["flask==3.1.3\nwaitress\n"], ["\n\n  flask==3.1.3\t\n\n waitress \n"]),
        (["flask>=3.0,<4\n"], ["flask >= 3.0 , < 4\n"]),
        (["flask==3.1.3\n"], ["Flask==3.1.3\n"]),
        (["typing_extensions\n"], ["typing-extensions\n"]),
        (["flask\nwaitress\n"], ["waitress\nflask\n"]),
        (["flask\nwaitress\n"], ["flask\n", "waitress\n"]),
        (["flask\n"], ["flask\nflask\n"]),
        (["flask>=3.0,<4\n"], ["flask>=3.0,\\\n<4\n"]),
        ([], ["# nothing here\n", "\n"]),
    ],
    ids=[
        "comments",
        "blank-lines-and-spaces",
        "operator-spacing",
        "name-case",
        "name-separator",
        "line-order",
        "split-across-texts",
        "duplicate-line",
        "line-continuation",
        "empty-vs-comments-only",
    ],
)
def test_key_of_equivalent_requirements_is_equal(
    cache: VenvCache, first: list[str], second: list[str]
) -> None:
    assert cache.key(first) == cache.key(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["flask==3.1.3\n"], ["flask==3.1.2\n"]),
        (["flask\n"], ["flask\nwaitress\n"]),
        (["flask\n"], ["flask[async]\n"]),
        (["flask\n"], ['flask; python_version < "3.12"\n']),
        (["git+https://host/repo#egg=a\n"], ["git+https://host/repo#egg=b\n"]),
        ([], ["flask\n"]),
    ],
    ids=["version", "extra-package", "extras", "marker", "url-fragment-is-not-comment", "empty"],
)
def test_key_of_different_requirements_differs(
    cache: VenvCache, first: list[str], second: list[str]
) -> None:
    assert cache.key(first) != cache.key(second)


def test_key_is_32_hex_digits_and_stable_across_instances(tmp_path: Path) -> None:
    key = VenvCache(tmp_path / "a").key(["flask\n"])

    assert len(key) == 32 and int(key, 16) >= 0
    assert VenvCache(tmp_path / "b").key(["flask\n"]) == key


def test_key_with_explicit_base_interpreter_equals_default(tmp_path: Path) -> None:
    base = getattr(sys, "_base_executable", sys.executable)

    explicit = VenvCache(tmp_path, python=base).key(["flask\n"])

    assert explicit == VenvCache(tmp_path).key(["flask\n"])


def test_normalised_requirements_strips_noise_and_keeps_meaning() -> None:
    texts = [
        "# template\nFlask >= 3.0  # web\n\n",
        "Typing_Extensions\ngit+https://host/repo#egg=x\n--index-url https://x/simple\n",
    ]

    assert normalised_requirements(texts) == [
        "--index-url https://x/simple",
        "flask>=3.0",
        "git+https://host/repo#egg=x",
        "typing-extensions",
    ]


def test_ensure_builds_venv_where_package_imports(cache: VenvCache) -> None:
    venv = asyncio.run(cache.ensure([PACKAGE]))

    assert venv == Venv(
        key=cache.key([PACKAGE]),
        path=cache.root / cache.key([PACKAGE]),
        python=cache.root / cache.key([PACKAGE]) / "bin" / "python",
    )
    run = subprocess.run(
        [venv.python, "-c", "import waitress, sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == str(venv.path)


@pytest.mark.parametrize(
    ("subdir", "first_line"),
    [("v", "#!{python}"), ("deep" * 20, "#!/bin/sh")],
    # pip writes a plain #! line up to 127 bytes and a /bin/sh exec trampoline beyond.
    ids=["short-path-plain-shebang", "long-path-sh-trampoline"],
)
def test_ensure_leaves_console_scripts_pointing_at_final_path(
    tmp_path_factory: pytest.TempPathFactory, subdir: str, first_line: str
) -> None:
    cache = VenvCache(tmp_path_factory.mktemp("c", numbered=True) / subdir)

    venv = asyncio.run(cache.ensure([PACKAGE]))

    script = venv.path / "bin" / "waitress-serve"
    text = script.read_text()
    assert text.splitlines()[0] == first_line.format(python=venv.python)
    assert str(venv.python) in text and ".tmp-" not in text
    run = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert "waitress-serve [OPTS] MODULE:OBJECT" in run.stdout


def test_ensure_passes_pip_output_lines_to_progress(cache: VenvCache) -> None:
    lines: list[str] = []

    asyncio.run(cache.ensure([PACKAGE], lines.append))

    assert any(
        line.startswith("Successfully installed") and "waitress-3.0.2" in line for line in lines
    )
    assert all("\n" not in line for line in lines)


def test_ensure_again_returns_same_venv_without_spawning(
    cache: VenvCache, spawns: list[list[str]]
) -> None:
    first = asyncio.run(cache.ensure([PACKAGE]))
    spawns.clear()
    lines: list[str] = []

    second = asyncio.run(cache.ensure(["# same, reworded\n" + PACKAGE + "  \n"], lines.append))

    assert second == first
    assert spawns == []
    assert lines == []
    assert cache.lookup([PACKAGE]) == first


def test_lookup_before_ensure_returns_none(cache: VenvCache) -> None:
    assert cache.lookup([PACKAGE]) is None


def test_ensure_concurrently_for_same_key_builds_once(
    cache: VenvCache, spawns: list[list[str]]
) -> None:
    progress: list[list[str]] = [[], []]

    async def both() -> list[Venv]:
        return await asyncio.gather(*(cache.ensure([PACKAGE], p.append) for p in progress))

    first, second = asyncio.run(both())

    assert first == second
    assert [argv[1:3] for argv in spawns] == [["-m", "venv"], ["-m", "pip"]]
    assert sorted(bool(p) for p in progress) == [False, True]


def test_ensure_from_two_processes_builds_once(tmp_path: Path) -> None:
    child = textwrap.dedent(
        """
        import asyncio, sys
        from pathlib import Path
        from runtime.venvs import VenvCache
        lines = []
        venv = asyncio.run(VenvCache(Path(sys.argv[1])).ensure([sys.argv[2]], lines.append))
        print(len(lines), venv.path)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", child, str(tmp_path / "venvs"), PACKAGE]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=240)[0].split() for p in procs]

    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0][1] == outputs[1][1]
    assert sorted(int(out[0]) > 0 for out in outputs) == [False, True]


def test_ensure_with_missing_package_raises_pip_reason_and_leaves_nothing(
    cache: VenvCache,
) -> None:
    with pytest.raises(VenvBuildError) as caught:
        asyncio.run(cache.ensure([MISSING]))

    assert "pip install failed" in str(caught.value)
    assert "No matching distribution found for this-package-does-not-exist-ofc" in str(caught.value)
    assert leftovers(cache.root) == []
    assert cache.lookup([MISSING]) is None


def test_ensure_with_empty_requirements_builds_venv_without_pip(
    cache: VenvCache, spawns: list[list[str]]
) -> None:
    venv = asyncio.run(cache.ensure(["# no dependencies\n"]))

    assert [argv[1:3] for argv in spawns] == [["-m", "venv"]]
    subprocess.run([venv.python, "-c", "import sys"], check=True)


def _crashed_build(root: Path, key: str) -> None:
    (root / f".tmp-{key}-abc123" / "bin").mkdir(parents=True)


def _incomplete_final(root: Path, key: str) -> None:
    (root / key / "bin").mkdir(parents=True)  # no completion marker


@pytest.mark.parametrize(
    "leave", [_crashed_build, _incomplete_final], ids=["crashed-tmp-dir", "unmarked-final-dir"]
)
def test_ensure_after_interrupted_build_cleans_up_and_rebuilds(
    cache: VenvCache, leave: Callable[[Path, str], None]
) -> None:
    key = cache.key([])
    leave(cache.root, key)

    venv = asyncio.run(cache.ensure([]))

    assert leftovers(cache.root) == [key]
    assert venv.python.exists()


def test_ensure_when_progress_raises_stops_build_and_leaves_nothing(cache: VenvCache) -> None:
    def explode(line: str) -> None:
        if "Collecting" in line or "Looking in" in line:
            raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        asyncio.run(cache.ensure([PACKAGE], explode))

    assert leftovers(cache.root) == []


def test_ensure_failure_strips_url_credentials_from_error_and_progress(tmp_path: Path) -> None:
    python = fake_interpreter(
        tmp_path,
        """
        echo "fetching https://alice:s3cret@index.example.invalid/simple/ and git+https://tok@host/r"
        exit 3
        """,
    )
    cache = VenvCache(tmp_path / "venvs", python=python)
    lines: list[str] = []

    with pytest.raises(VenvBuildError) as caught:
        asyncio.run(cache.ensure(["six\n"], lines.append))

    message = str(caught.value)
    assert "python -m venv failed with exit status 3" in message
    assert "https://index.example.invalid/simple/" in message
    assert "git+https://host/r" in message
    assert not [text for text in [message, *lines] if "s3cret" in text or "tok@" in text]
    assert leftovers(cache.root) == []


def test_ensure_failure_message_keeps_last_20_output_lines(tmp_path: Path) -> None:
    python = fake_interpreter(
        tmp_path,
        """
        for i in $(seq 1 50); do echo "line $i"; done
        exit 1
        """,
    )
    cache = VenvCache(tmp_path / "venvs", python=python)

    with pytest.raises(VenvBuildError) as caught:
        asyncio.run(cache.ensure([]))

    output = str(caught.value).splitlines()[1:]
    assert output == [f"line {i}" for i in range(31, 51)]

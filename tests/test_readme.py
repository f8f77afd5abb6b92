"""The README's Python examples run as they stand, in order, on the bundled sample dataset."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def python_blocks(text: str) -> list[str]:
    """The code of every ```python block, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.M | re.S)


def test_the_readme_examples_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, code in enumerate(blocks, 1):
        exec(compile(code, f"README.md python block {number}", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "4 3"  # the sample dataset's images and faces, as the first example says
    assert (tmp_path / "runs" / "readme" / "last.keras").is_file()
    assert printed[-1].startswith("(512, 600) [[") and len(namespace["found"].scores) == 1  # Grace Hopper's face

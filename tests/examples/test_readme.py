"""The README's sync example, run as a reader would: against the seeded sandbox, over HTTP, twice."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from .conftest import Sandbox

README = Path(__file__).resolve().parents[2] / "README.md"


def _sync_example() -> str:
    section = README.read_text().split("## Sync example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    return code.group(1)


def test_the_readme_sync_example_works_against_the_sandbox_and_again_on_a_second_run(
    sandbox: Sandbox,
) -> None:
    code = compile(_sync_example(), str(README), "exec")
    outputs = []
    for _ in range(2):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, {"__name__": "readme_sync_example"})
        outputs.append(out.getvalue())

    assert outputs[0] == outputs[1]  # the second run found user_42 and its subscription
    assert re.fullmatch(r"sub_\w+ active \d{4}-\d\d-\d\d .+\n", outputs[0])
    assert sandbox.fake.usage_of("user_42", "api_calls") == 2
    created = sandbox.fake.customer("user_42")
    assert created is not None
    assert created.email == "lin@example.com"

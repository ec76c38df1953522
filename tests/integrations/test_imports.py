"""The integrations are optional: ``import billingos`` never imports a web framework, and without FastAPI the
FastAPI module says which extra to install."""

import subprocess
import sys


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_billingos_imports_no_web_framework() -> None:
    result = run(
        "import sys, billingos, billingos.integrations, billingos.integrations.wsgi\n"
        "loaded = sorted(m for m in ('fastapi', 'starlette', 'flask', 'django') if m in sys.modules)\n"
        "assert not loaded, loaded"
    )
    assert result.returncode == 0, result.stderr


def test_without_fastapi_the_error_names_the_extra() -> None:
    result = run(
        "import sys\n"
        "sys.modules['fastapi'] = None  # as if it were not installed\n"
        "import billingos.integrations.fastapi"
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "pip install 'billingos[fastapi]'" in result.stderr

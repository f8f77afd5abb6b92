"""What every fuzz test of the command line shares: its budget, a weighting of strategies, and the contract.

The contract (:func:`assert_behaves`): whatever a command is given, it ends
with a documented exit status (0, 1 or 2), never a traceback or a Python
warning, and a refusal (2) is one ``error:`` line on stderr.
"""

from __future__ import annotations

from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from facegrid.cli import main

#: Examples a fuzz test runs; the work folder fixture lives for the whole test, so it is allowed.
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def mostly(common, *rare):
    """Strategy: ``common`` six times in seven, else one of ``rare`` (repeating one in ``one_of`` weighs nothing)."""
    return st.sampled_from([True] * 6 + [False]).flatmap(lambda usual: common if usual else st.one_of(rare))


def write(path, data: bytes) -> None:
    """Write ``data`` at ``path`` (parents made), unless the generated name cannot be a file here."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except (OSError, ValueError):
        pass


def assert_behaves(args):
    """Run the command: no traceback or Python warning, a documented exit status, a refusal in one line."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exc_info)
    assert result.exit_code in (0, 1, 2), (args, result.output)
    assert "Traceback" not in result.output and "Warning:" not in result.stderr, result.stderr
    if result.exit_code == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, (args, result.stderr)
    return result

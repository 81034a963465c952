"""Running `rar-pipeline` in tests, and what a user mistake must look like."""

from __future__ import annotations

from click.testing import CliRunner, Result

from rar_pipeline.cli import cli


def run(env: dict, *args) -> Result:
    """Invoke the CLI; anything but a clean exit or click's own error handling propagates."""
    return CliRunner().invoke(cli, [str(arg) for arg in args], env=env, catch_exceptions=False)


def one_line_error(result: Result) -> str:
    """Exit status 1, exactly one `Error:` line on stderr and nothing else there, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]

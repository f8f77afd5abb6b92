"""``facegrid download``: a dataset's archives fetched, checked against their pins and unpacked."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facegrid.cli.app import (
    Number,
    fatal_input_errors,
    main,
    notice,
    printable,
    verbose,
)
from facegrid.wider.download import RELEASES
from facegrid.wider.fetch import STALL_BYTES


@main.command()
@click.argument("dataset", type=click.Choice(sorted(RELEASES)))
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder to fill (created if need be); archives are kept in its archives/.",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="URL",
    help="Base URL of a mirror to try first (repeatable; ARCHIVE is fetched from URL/ARCHIVE).",
)
@click.option("--only", multiple=True, metavar="ARCHIVE", help="Fetch only this archive (repeatable).")
@click.option(
    "--timeout",
    type=Number(0, 3600, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a connection, then for an answer; after its first byte a mirror must "
    f"send {STALL_BYTES // 1024} KiB in every such span, or it is given up as stalled and the next "
    "mirror tried.",
)
@click.option(
    "--trust-unpinned",
    is_flag=True,
    help="Take an archive facegrid pins no sha256 for as a mirror serves it (its digest is printed).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace files in the dataset folder that differ from the archives' (else they are refused).",
)
@fatal_input_errors
def download(dataset, to, mirrors, only, timeout, trust_unpinned, overwrite) -> None:
    """Download DATASET's archives and unpack them into the layout the other commands read.

    Each archive is checked against the sha256 facegrid pins for it; an
    archive with none pinned is refused unless --trust-unpinned. A mirror
    that fails (HTTP error, timeout or stall, more bytes than pinned, wrong
    digest) costs one line on stderr and the next mirror is tried; a download cut off resumes where it
    stopped, and what is already in place is not fetched again. A file in
    the dataset folder that differs from an archive's is refused unless
    --overwrite. Exit status 1 when some archives could not be put in
    place, 2 when none could.
    """
    from facegrid.wider.download import install_release

    outcomes = install_release(
        RELEASES[dataset],
        to,
        mirrors=mirrors,
        only=only,
        trust_unpinned=trust_unpinned,
        overwrite=overwrite,
        timeout=timeout,
        progress=verbose() or sys.stderr.isatty(),
        notice=notice,
    )
    placed = []
    try:
        for outcome in outcomes:
            hint = "; --trust-unpinned takes the copy a mirror serves" if outcome.unpinned else ""
            click.echo(printable(outcome.message + hint), err=not outcome.ok)
            placed.append(outcome.ok)
    except ValueError as error:  # a --mirror or --only the release cannot take
        raise click.UsageError(str(error)) from None
    if not any(placed):
        click.echo("error: no archive could be put in place (see the lines above)", err=True)
    sys.exit(0 if all(placed) else 1 if any(placed) else 2)

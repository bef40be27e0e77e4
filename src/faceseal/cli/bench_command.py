"""``faceseal bench``: a thin layer over :func:`faceseal.bench.run_bench`."""

from __future__ import annotations

from pathlib import Path

import click

from faceseal.cli.common import common_options
from faceseal.cli.output import Output


@click.command()
@click.option("--n", "n", type=click.IntRange(min=100), default=1_000_000, show_default=True,
              help="Gallery size (encodings).")
@click.option("--per-subject", type=click.IntRange(min=1), default=4, show_default=True,
              help="Templates per synthetic identity.")
@click.option("--probes", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Planted genuine probes (recall is measured over these).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the synthetic data.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the temporary vault goes (default: the system temp dir).")
@click.option("--keep", is_flag=True, help="Keep the temporary vault afterwards.")
@common_options
def bench(output: Output, vault_dir: Path | None, n: int, per_subject: int, probes: int,
          seed: int, workdir: Path | None, keep: bool) -> None:
    """Measure the fast paths (seal, enrol, open, identify, recall, memory, verify), each
    beside a baseline measured in the same run, on a synthetic gallery in a temporary vault."""
    from faceseal.bench import BenchOptions, format_report, run_bench  # noqa: PLC0415

    del vault_dir  # the bench always makes its own temporary vault
    say = (lambda _line: None) if output.json else (lambda line: click.echo(line, err=True))
    report = run_bench(BenchOptions(n=n, per_subject=per_subject, probes=probes, seed=seed,
                                    workdir=workdir, keep=keep), say)
    output.emit(report, lambda: click.echo("\n".join(format_report(report))))

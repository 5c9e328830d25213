"""Click commands of the scoring side: score and report."""
import click


@click.command()
def score():
  """Score reviews with a trained model in a Beam pipeline (not yet wired)."""
  raise click.ClickException("not implemented yet")


@click.command()
def report():
  """Summarise a scored output with numbers and plots (not yet wired)."""
  raise click.ClickException("not implemented yet")

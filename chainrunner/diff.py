"""`chainrunner diff INV_A INV_B`: the command, light at import (`--help` lists it); the
comparison is in chainrunner.diffing, the service is reached through chainrunner.client."""

import os

import click

from chainrunner.cli_group import CommandRefused

__all__ = ["diff"]

URL_ENV, KEY_ENV = "CHAINRUNNER_URL", "CHAINRUNNER_API_KEY"


@click.command()
@click.argument("invocation_a")
@click.argument("invocation_b")
@click.option("--url", envvar=URL_ENV, default="http://127.0.0.1:8000", show_default=True,
              help=f"The service's base URL [env {URL_ENV}].")
@click.option("--json", "as_json", is_flag=True, help="Print the difference as one JSON "
                                                      "document.")
def diff(invocation_a: str, invocation_b: str, url: str, as_json: bool) -> None:
    """Show step by step what changed (prompt, output, state) from INVOCATION_A to
    INVOCATION_B, say a rerun and its source. The API key is read from $CHAINRUNNER_API_KEY."""
    from chainlets.errors import ChainrunnerError
    from chainrunner.client import Client, ServiceError
    from chainrunner.diffing import diff_invocations, render

    try:
        with Client(url, api_key=os.environ.get(KEY_ENV) or None) as client:
            statuses = [client.run_status(i) for i in (invocation_a, invocation_b)]
            # The chain's JSON as stored: only its steps' prompts are compared.
            chains = [client.invoke("get_chain", chain_id=s.chain_id)["chain"]
                      if s.chain_id else None for s in statuses]
    except ServiceError as exc:  # unreachable, refused the key, or failed: exit 1
        raise click.ClickException(f"{url}: {exc}") from exc
    except ChainrunnerError as exc:  # an unknown invocation or a bad id: exit 2
        raise CommandRefused(str(exc)) from exc
    if chains[0] is None or chains[1] is None:
        raise CommandRefused("an invocation without a stored chain cannot be diffed")
    result = diff_invocations(statuses[0], chains[0], statuses[1], chains[1])
    click.echo(result.model_dump_json(indent=2) if as_json else render(result))

"""Make the soak's accounts with the operator CLI's own commands, in one process.

    image-router env… python bench/soak_accounts.py < plan.json > accounts.json

Reads `[{"email", "credit_usd"}, …]`; for each runs `users create`, `keys create` (a normal
key), `keys create --management` and `credits grant … --force`, exactly as an operator
would type them, but through the Typer app in this process: starting the CLI once per
command costs seconds each on a busy machine, a hundred of them minutes. Writes
`[{"email", "key", "manager"}, …]`; exits 1 with the command's output if one fails.
"""

from __future__ import annotations

import json
import sys

from typer.testing import CliRunner

from image_router.cli import app


def main() -> int:
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, list(args))
        if result.exit_code != 0:
            print(f"`image-router {' '.join(args)}` exited {result.exit_code}:", file=sys.stderr)
            print(result.output, file=sys.stderr)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise result.exception
            raise SystemExit(1)
        return result.output

    made = []
    for spec in json.load(sys.stdin):
        email = spec["email"]
        cli("users", "create", email)
        key = cli("keys", "create", email, "--name", "soak").strip().splitlines()[-1]
        manager = cli("keys", "create", email, "--name", "soak-manager", "--management")
        cli("credits", "grant", email, spec["credit_usd"], "--reason", "soak", "--force")
        made.append(
            {"email": email, "key": key.strip(), "manager": manager.strip().splitlines()[-1]}
        )
    json.dump(made, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m train train|eval ...``: the same commands as ``realtime train|eval``."""

import click

from train.commands import eval_command, train_command


@click.group()
def main() -> None:
    """Train and evaluate realtime's age/gender models."""


main.add_command(train_command)
main.add_command(eval_command)

if __name__ == "__main__":
    main()

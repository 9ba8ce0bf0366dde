"""``python -m realtime.cli``: the `realtime` program."""

from realtime.cli import main

main()

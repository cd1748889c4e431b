"""`python -m cli`: the `fleet` command."""

from cli.entry import main

main()

"""`python -m cli`: the `fleet` command."""

from cli.main import main

main()

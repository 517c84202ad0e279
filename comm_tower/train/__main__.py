"""`python -m comm_tower.train ...` runs the `comm-train` CLI."""

from comm_tower.train.cli import main

if __name__ == "__main__":
    main()

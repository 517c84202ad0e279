"""`python -m comm_tower.eval` runs comm-eval."""

from comm_tower.eval.runner import main

main()

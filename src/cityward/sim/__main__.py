"""`python -m cityward.sim ...`: the simulated city's command line without the platform's CLI."""

from cityward.sim.cli import main

main()

"""`python -m tinystories` runs the command-line application."""

from tinystories.cli import main

main()

"""absl-flag entry points, one per job: `python -m launch.<job> --flag=value`.

The only place in the project that parses flags; each job calls one importable library function.
"""

"""``python -m primkd.stages --write|--check``: see :func:`primkd.stages.generate.main`."""

from primkd.stages.generate import main

main()

"""``python -m oasst`` is the ``oasst`` command."""

from oasst.cli.main import main

main()

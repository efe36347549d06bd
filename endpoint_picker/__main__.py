"""Lets ``python -m endpoint_picker`` behave like the ``endpoint-picker`` console script."""

from endpoint_picker.cli import main

raise SystemExit(main())
